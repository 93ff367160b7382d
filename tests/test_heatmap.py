"""Processor heatmap on hand-made sessions: views, rewatches, clipping and live drop-offs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from starlette.testclient import TestClient

from ingest.app import create_app
from processors.heatmap import MAX_MEDIA_SECONDS
from tests.factories import make_event, run_burst
from vidpulse.events import now_ms
from vidpulse.settings import Settings

T0 = now_ms() - 3_600_000


def send(ingest: TestClient, *events: dict[str, Any]) -> None:
    response = ingest.post("/v1/events", json=list(events))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def heatmap(db: psycopg.Connection[Any]) -> dict[int, tuple[int, float, int]]:
    """{segment_start: (views, watch_seconds, drop_offs)} of video-1."""
    rows = db.execute(
        "SELECT segment_start, views, watch_seconds, drop_offs FROM video_heatmap"
        " WHERE video_id = 'video-1' ORDER BY segment_start"
    ).fetchall()
    return {start: (views, seconds, drops) for start, views, seconds, drops in rows}


def progress(
    session: str, ts: int, played: list[list[float]], position: float, **extra: Any
) -> dict[str, Any]:
    return make_event(
        "progress", session_id=session, ts=ts, played=played, position_s=position, **extra
    )


def test_views_count_sessions_once_and_watch_seconds_count_rewatches(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A rewatched segment gets one view per session but every second played."""
    send(
        ingest,
        progress("a", T0, [[0, 25]], 25),
        progress("a", T0 + 1000, [[5, 15]], 15),
        progress("b", T0, [[12, 18]], 18),
    )
    run_burst(settings, "heatmap")
    got = heatmap(db)
    assert {k: v[:2] for k, v in got.items()} == {0: (1, 15.0), 10: (2, 21.0), 20: (1, 5.0)}


def test_drop_off_follows_the_latest_position_while_the_session_goes_on(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """drop_offs moves with each newer position, and a late older event does not move it."""
    send(ingest, progress("a", T0, [[0, 5]], 5))
    run_burst(settings, "heatmap")
    assert heatmap(db)[0][2] == 1
    send(ingest, progress("a", T0 + 30_000, [[5, 35]], 35))
    run_burst(settings, "heatmap")
    drops = {k: v[2] for k, v in heatmap(db).items()}
    assert drops == {0: 0, 10: 0, 20: 0, 30: 1}
    send(ingest, make_event("play", session_id="a", ts=T0 + 10_000, position_s=80.0))
    run_burst(settings, "heatmap")
    assert {k: v[2] for k, v in heatmap(db).items() if v[2]} == {30: 1}


def test_a_position_at_the_end_counts_in_the_last_segment(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """With duration 30, positions 30 and 30.5 drop off in segment [20, 30), not [30, 40)."""
    send(
        ingest,
        make_event("session_end", session_id="a", ts=T0, position_s=30.0, duration_s=30.0),
        make_event("session_end", session_id="b", ts=T0, position_s=30.5, duration_s=30.0),
    )
    run_burst(settings, "heatmap")
    assert heatmap(db) == {20: (0, 0.0, 2)}


def test_played_ranges_are_clipped_to_the_events_duration(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Seconds reported past the duration count nowhere."""
    send(ingest, progress("a", T0, [[25, 30.8]], 30, duration_s=30.0))
    run_burst(settings, "heatmap")
    assert heatmap(db) == {20: (1, 5.0, 1)}


def test_a_redelivered_batch_changes_nothing(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """The same events sent again (client retries) leave the heatmap as it was."""
    events = [progress("a", T0, [[0, 12]], 12), progress("a", T0 + 1, [[12, 20]], 20)]
    send(ingest, *events)
    run_burst(settings, "heatmap")
    before = heatmap(db)
    send(ingest, *events)
    run_burst(settings, "heatmap")
    assert heatmap(db) == before == {0: (1, 10.0, 0), 10: (1, 10.0, 0), 20: (0, 0.0, 1)}


def test_an_absurd_duration_writes_a_bounded_number_of_rows(
    make_settings: Callable[..., Settings], db: psycopg.Connection[Any]
) -> None:
    """A first beacon claiming a trillion-second video is credited 30 s; its drop-off is capped."""
    # The default ingest refuses such a duration; a deployment may allow it.
    settings = make_settings(max_duration_seconds=1e12)
    with TestClient(create_app(settings)) as ingest:
        send(ingest, progress("a", T0, [[0, 1e12]], 1e12, duration_s=1e12))
    run_burst(settings, "heatmap")
    count, last, seconds, drops = db.execute(
        "SELECT count(*), max(segment_start), sum(watch_seconds), sum(drop_offs) FROM video_heatmap"
    ).fetchone() or (None, None, None, None)
    size = settings.segment_seconds
    assert (count, last, seconds, drops) == (30 // size + 1, MAX_MEDIA_SECONDS - size, 30, 1)
