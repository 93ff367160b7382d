"""Processor progress on hand-made sessions: completion, completed_at, resume, device fields."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from tests.factories import make_event, run_burst
from tools.audience import USER_AGENTS
from vidpulse.events import now_ms
from vidpulse.settings import Settings

T0 = now_ms() - 3_600_000


def send(ingest: TestClient, *events: dict[str, Any], **headers: str) -> None:
    response = ingest.post("/v1/events", json=list(events), headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def session(db: psycopg.Connection[Any], session_id: str) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM video_sessions WHERE session_id = %s", (session_id,)
        ).fetchone()
    assert row is not None
    return row


def resume(db: psycopg.Connection[Any], viewer: str = "viewer-1") -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM video_watch_progress WHERE viewer_id = %s AND video_id = 'video-1'",
            (viewer,),
        ).fetchone()
    assert row is not None
    return row


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def played(session_id: str, ts: int, start: float, end: float) -> dict[str, Any]:
    return make_event(
        "progress", session_id=session_id, ts=ts, played=[[start, end]], position_s=end
    )


def test_seeking_to_the_end_does_not_complete_a_session(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Only played seconds count: a seek to the end leaves completion_pct at what was played."""
    send(
        ingest,
        make_event("session_start", session_id="s", ts=T0),
        make_event("play", session_id="s", ts=T0 + 1),
        played("s", T0 + 10_000, 0, 10),
        make_event("seek", session_id="s", ts=T0 + 10_001, from_s=10.0, to_s=99.0, position_s=99.0),
        make_event(
            "session_end", session_id="s", ts=T0 + 11_000, position_s=100.0, played=[[99, 100]]
        ),
    )
    run_burst(settings, "progress")
    row = session(db, "s")
    assert row["completion_pct"] == Decimal("11.00")
    assert row["completed"] is False
    assert row["completed_at"] is None
    assert (row["position_s"], row["max_position_s"], row["unique_seconds"]) == (100.0, 100.0, 11.0)
    assert (row["plays"], row["seeks"], row["pauses"]) == (1, 1, 0)


def test_completed_at_is_the_moment_coverage_reached_the_threshold_in_any_arrival_order(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Coverage reaches 90% with the event at T0+2s; applied newest first, that stays the moment."""
    send(ingest, make_event("session_start", session_id="s", ts=T0 - 60_000))
    events = [
        played("s", T0, 0, 50),
        played("s", T0 + 2000, 50, 92),
        played("s", T0 + 3000, 92, 100),
        make_event("complete", session_id="s", ts=T0 + 4000, position_s=100.0),
    ]
    for event in reversed(events):
        send(ingest, event)
        run_burst(settings, "progress")
    row = session(db, "s")
    assert row["completed"] is True
    assert row["completed_at"] == at(T0 + 2000)
    assert row["completion_pct"] == Decimal("100.00")
    assert resume(db)["completed_at"] == at(T0 + 2000)


def test_a_complete_event_completes_a_session_below_the_threshold(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """The player's own complete event counts, at its ts, even with little coverage."""
    send(ingest, played("s", T0, 0, 30), make_event("complete", session_id="s", ts=T0 + 5000))
    run_burst(settings, "progress")
    row = session(db, "s")
    assert (row["completed"], row["completed_at"], row["completion_pct"]) == (
        True,
        at(T0 + 5000),
        Decimal("30.00"),
    )


def test_resume_position_never_moves_backwards(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """The latest event's position wins; a late older one changes nothing; a newer session does."""
    send(ingest, played("s1", T0 + 10_000, 0, 50), played("s1", T0 + 20_000, 50, 80))
    run_burst(settings, "progress")
    send(ingest, make_event("pause", session_id="s1", ts=T0 + 15_000, position_s=60.0))
    run_burst(settings, "progress")
    row = resume(db)
    assert (row["position_s"], row["duration_s"], row["progress_pct"]) == (
        80.0,
        100.0,
        Decimal("80.00"),
    )
    send(ingest, make_event("play", session_id="s2", ts=T0 + 90_000, position_s=5.0))
    run_burst(settings, "progress")
    row = resume(db)
    assert (row["position_s"], row["progress_pct"]) == (5.0, Decimal("5.00"))
    assert (row["first_watched_at"], row["last_watched_at"]) == (at(T0 + 10_000), at(T0 + 90_000))


def test_completion_is_sticky_across_a_viewers_sessions(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A later session that watches little leaves the viewer's video completed."""
    send(
        ingest,
        make_event("session_start", session_id="s1", ts=T0 - 60_000),
        played("s1", T0, 0, 95),
    )
    send(ingest, played("s2", T0 + 60_000, 0, 10))
    run_burst(settings, "progress")
    row = resume(db)
    assert (row["completed"], row["completed_at"], row["position_s"]) == (True, at(T0), 10.0)
    assert row["first_watched_at"] == at(T0 - 60_000)
    assert session(db, "s2")["completed"] is False


def test_session_keeps_the_first_request_headers(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """user_agent, device fields and referrer come from the session's first event carrying them."""
    phone = USER_AGENTS[3]
    send(ingest, make_event("play", session_id="s", ts=T0 + 5), **{"User-Agent": USER_AGENTS[0]})
    send(
        ingest,
        make_event("session_start", session_id="s", ts=T0, course_id="c-1", lesson_id="l-1"),
        **{"User-Agent": phone, "Referer": "https://learn.example.com/c-1"},
    )
    run_burst(settings, "progress")
    row = session(db, "s")
    assert (row["user_agent"], row["device_type"], row["browser"], row["os"]) == (
        phone,
        "mobile",
        "Mobile Safari",
        "iOS",
    )
    assert row["referrer"] == "https://learn.example.com/c-1"
    assert (row["course_id"], row["lesson_id"]) == ("c-1", "l-1")


def test_a_tiny_duration_gives_100_percent_not_an_error(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """position / duration overflowing to infinity is capped at 100, like any ratio above it."""
    send(ingest, make_event("pause", session_id="s", ts=T0, position_s=1.0, duration_s=5e-324))
    run_burst(settings, "progress")
    row = resume(db)
    assert (row["progress_pct"], session(db, "s")["completion_pct"]) == (Decimal(100), Decimal(0))


def test_a_session_row_without_a_pair_still_gets_its_resume_row(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Rows are made bound to their first event's (video, viewer); one that is not (as
    an older schema could leave) takes its pair in the fold, after the batch locked the
    pairs it knew of: that pair is locked and written too."""
    db.execute("INSERT INTO progress_sessions (session_id) VALUES ('unbound')")
    db.commit()
    send(ingest, played("unbound", T0, 0, 30))
    run_burst(settings, "progress")
    assert float(resume(db)["position_s"]) == 30.0
