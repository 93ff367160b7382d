"""The walking skeleton end to end: beacon, stream, raw processor, video_events."""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.testclient import TestClient

from tests.factories import make_event, run_burst
from vidpulse.settings import Settings


def test_beacon_reaches_video_events(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """An accepted beacon ends as one row of video_events after the raw processor runs."""
    event = make_event("session_start")
    response = ingest.post("/v1/events", json=event)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    run_burst(settings, "raw")
    rows = db.execute("SELECT event_id::text, type, duration_s FROM video_events").fetchall()
    assert rows == [(event["event_id"], "session_start", 100.0)]
