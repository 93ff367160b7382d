"""Processor metrics on hand-made events: exact distinct counts, UTC days, the analyst views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from tests.factories import make_event, run_burst
from vidpulse.events import now_ms
from vidpulse.settings import Settings

T0 = now_ms() - 3_600_000


def xadd(client: redis.Redis, settings: Settings, *events: dict[str, Any]) -> None:
    """Straight onto the stream, as the ingest writes entries (and without its dedupe)."""
    for event in events:
        client.xadd(settings.stream, {"event": orjson.dumps(event), "received_at": now_ms()})


def metrics(db: psycopg.Connection[Any], video: str = "video-1") -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM video_metrics WHERE video_id = %s", (video,)).fetchone()
    assert row is not None
    return row


def test_distinct_counts_count_each_member_once(
    redis_client: redis.Redis, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Views, milestone viewers, completions and completers are distinct; event counts are not."""
    xadd(
        redis_client,
        settings,
        make_event("session_start", session_id="s1", ts=T0),
        make_event("session_start", session_id="s1", ts=T0 + 1),  # a second start, same session
        make_event("session_start", session_id="s2", ts=T0 + 60_000),
        make_event("play", session_id="s1", ts=T0 + 2),
        make_event("play", session_id="s2", ts=T0 + 60_001),
        make_event("milestone", session_id="s1", ts=T0 + 3, milestone=50),
        make_event("milestone", session_id="s2", ts=T0 + 60_002, milestone=50),
        make_event("complete", session_id="s1", ts=T0 + 4),
        make_event("complete", session_id="s1", ts=T0 + 5),
        make_event("complete", session_id="s2", ts=T0 + 60_003),
        make_event("play", session_id="s3", viewer_id="viewer-2", ts=T0 + 7),
    )
    run_burst(settings, "metrics")
    row = metrics(db)
    assert (row["views"], row["unique_viewers"], row["plays"]) == (2, 2, 3)
    assert (row["watched_50_count"], row["watched_25_count"]) == (1, 0)
    assert (row["completions"], row["unique_completers"]) == (2, 1)


def test_watch_seconds_clip_and_merge_each_events_ranges(
    redis_client: redis.Redis, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Overlapping ranges in one event count once; across events they count again."""
    xadd(
        redis_client,
        settings,
        make_event("progress", ts=T0, played=[[0, 10], [5, 12]], duration_s=100.0),
        make_event("progress", ts=T0 + 1, played=[[0, 10]], duration_s=100.0),
        make_event("progress", ts=T0 + 2, played=[[95, 100.5]], duration_s=100.0),
    )
    run_burst(settings, "metrics")
    assert metrics(db)["watch_seconds"] == 27.0


def test_daily_counters_split_at_utc_midnight(
    redis_client: redis.Redis, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """One viewer either side of UTC midnight is a unique viewer on each day, once overall."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight -= timedelta(days=1)
    m = int(midnight.timestamp() * 1000)
    xadd(
        redis_client,
        settings,
        make_event("play", session_id="s1", ts=m - 1),
        make_event("play", session_id="s1", ts=m),
        make_event("pause", session_id="s1", ts=m + 1),
    )
    run_burst(settings, "metrics")
    rows = db.execute(
        "SELECT day, unique_viewers, plays, pauses, first_event_at, last_event_at"
        " FROM video_metrics_daily ORDER BY day"
    ).fetchall()

    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    assert rows == [
        ((midnight - timedelta(days=1)).date(), 1, 1, 0, at(m - 1), at(m - 1)),
        (midnight.date(), 1, 1, 1, at(m), at(m + 1)),
    ]
    assert metrics(db)["unique_viewers"] == 1


def test_analyst_views_summarise_and_rank_videos(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """The summary view computes the ratios; popular_videos ranks by watched-50, then views."""
    events = []
    for i, (video, watched) in enumerate([("a", 100), ("a", 40), ("b", 60), ("c", 10), ("c", 10)]):
        s = f"s{i}"
        events += [
            make_event(
                "session_start", video_id=video, session_id=s, viewer_id=s, ts=T0 - 60_000 + i
            ),
            make_event(
                "progress",
                video_id=video,
                session_id=s,
                viewer_id=s,
                ts=T0 + 10 + i,
                played=[[0, watched]],
                position_s=float(watched),
            ),
        ]
        if watched >= 50:
            events.append(
                make_event("milestone", video_id=video, session_id=s, viewer_id=s, ts=T0 + 20 + i)
            )
        if watched >= 90:
            events.append(
                make_event("complete", video_id=video, session_id=s, viewer_id=s, ts=T0 + 30)
            )
    assert ingest.post("/v1/events", json=events).status_code == 202
    for name in ("metrics", "progress"):
        run_burst(settings, name)
    with db.cursor(row_factory=dict_row) as cur:
        summary = {r["video_id"]: r for r in cur.execute("SELECT * FROM video_analytics_summary")}
    a = summary["a"]
    assert (a["views"], a["watch_seconds"], a["avg_watch_seconds_per_view"]) == (
        2,
        140.0,
        Decimal("70.00"),
    )
    assert (a["completions"], a["completion_rate_pct"], a["avg_completion_pct"]) == (
        1,
        Decimal("50.00"),
        Decimal("70.00"),
    )
    assert summary["c"]["completion_rate_pct"] == Decimal("0.00")
    ranked = [r[0] for r in db.execute("SELECT video_id FROM popular_videos").fetchall()]
    assert ranked == ["a", "b", "c"]
