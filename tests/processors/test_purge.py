"""Upkeep: processors forget ledger ids and working state older than the retention."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.factories import make_event, run_burst
from vidpulse.events import now_ms
from vidpulse.settings import Settings

DAY_MS = 86_400_000


@pytest.mark.parametrize("name", ["raw", "heatmap", "progress", "metrics"])
def test_ledger_forgets_ids_older_than_retention(
    name: str, ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """A ledger id applied before the retention is purged; a recent one stays."""
    old, recent = uuid.uuid4(), uuid.uuid4()
    table = f"{name}_applied"
    db.execute(
        f"INSERT INTO {table} (event_id, applied_at) VALUES (%s, now() - interval '9 days'),"
        " (%s, now() - interval '6 days')",
        (old, recent),
    )
    assert ingest.post("/v1/events", json=make_event("session_start")).status_code == 202
    run_burst(settings, name)
    left = {row[0] for row in db.execute(f"SELECT event_id FROM {table}")}
    assert old not in left
    assert recent in left


def test_progress_forgets_played_ranges_older_than_retention(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """progress_played rows of events older than the retention are purged, recent ones kept."""
    db.execute(
        "INSERT INTO progress_played (session_id, ts, ranges) VALUES"
        " ('old-session', %s, '{0,1}'), ('recent-session', %s, '{0,1}')",
        (now_ms() - 9 * DAY_MS, now_ms() - 6 * DAY_MS),
    )
    assert ingest.post("/v1/events", json=make_event("session_start")).status_code == 202
    run_burst(settings, "progress")
    left = {row[0] for row in db.execute("SELECT session_id FROM progress_played")}
    assert "old-session" not in left
    assert "recent-session" in left


def test_metrics_forgets_daily_members_of_old_days_but_never_all_time_members(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    """Daily distinct members of days past the retention go; all-time members stay."""
    db.execute(
        "INSERT INTO metrics_daily_members (video_id, day, kind, member) VALUES"
        " ('v-old', current_date - 9, 'viewer', 'u1'),"
        " ('v-recent', current_date - 6, 'viewer', 'u1')"
    )
    db.execute(
        "INSERT INTO metrics_members (video_id, kind, member) VALUES ('v-old', 'viewer', 'u1')"
    )
    assert ingest.post("/v1/events", json=make_event("session_start")).status_code == 202
    run_burst(settings, "metrics")
    daily = {row[0] for row in db.execute("SELECT video_id FROM metrics_daily_members")}
    assert "v-old" not in daily
    assert "v-recent" in daily
    assert db.execute(
        "SELECT count(*) FROM metrics_members WHERE video_id = 'v-old'"
    ).fetchone() == (1,)
