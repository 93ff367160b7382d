"""The bench's processor without a fold (bench/nofold.py): it reads, decodes, claims the
ledger and acknowledges every event of its processor's group like the processor, and
writes nothing else."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import psycopg
import pytest
import redis
from starlette.testclient import TestClient

from bench import nofold
from bench.env import BenchEnv
from processors.runtime import Consumer
from tests.factories import BROWSER_UA, make_event
from vidpulse.settings import Settings


def _send(ingest: TestClient, events: list[dict[str, Any]]) -> None:
    response = ingest.post("/v1/events", json=events, headers={"user-agent": BROWSER_UA})
    assert response.status_code == 202, response.text


def _beacons(count: int) -> list[dict[str, Any]]:
    return [
        make_event("progress", session_id=f"s-{i % 7}", played=[[i, i + 1.0]], position_s=i + 1.0)
        for i in range(count)
    ]


def _group(client: redis.Redis, stream: str, name: str) -> dict[str, Any]:
    return next(g for g in client.xinfo_groups(stream) if g["name"] in (name, name.encode()))


def test_it_claims_and_acknowledges_every_event_and_writes_no_table_of_its_own(
    make_settings: Any, ingest: TestClient, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    settings: Settings = make_settings(batch_size=10)
    events = _beacons(25)
    _send(ingest, events)
    _send(ingest, events[:5])  # a client retry: already in the ledger, claimed once
    Consumer(
        nofold.without_fold("progress"),
        settings,
        consumer="c",
        stop=threading.Event(),
        burst=True,
    ).run()
    assert db.execute("SELECT count(*) FROM progress_applied").fetchone() == (25,)
    group = _group(redis_client, settings.stream, "progress")
    assert (group["entries-read"], group["pending"]) == (30, 0)
    for table in ("progress_sessions", "video_sessions", "video_watch_progress"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    # The other groups are untouched: the processors themselves still have it all to do.
    assert _group(redis_client, settings.stream, "heatmap")["entries-read"] in (0, None)


def test_its_command_drains_a_backlog_as_the_processor_would(
    make_settings: Any, ingest: TestClient, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    settings: Settings = make_settings()
    _send(ingest, _beacons(40))
    argv = nofold.command("raw", consumer="bench", burst=True)
    assert argv[argv.index("process") + 1] == "raw"  # how the CPU meter names its part
    itself = nofold.command("raw", consumer="bench", burst=True, fold=True)
    assert itself[1:] == ["-m", "vidpulse", *argv[3:]]  # the processor, same arguments
    env = BenchEnv(redis_url=settings.redis_url, server_url=settings.database_url)
    done = subprocess.run(
        argv, env=env.environ(settings), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert db.execute("SELECT count(*) FROM raw_applied").fetchone() == (40,)
    assert db.execute("SELECT count(*) FROM video_events").fetchone() == (0,)
    assert _group(redis_client, settings.stream, "raw")["pending"] == 0


def test_an_unknown_processor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown processor 'views'; choose one of raw, "):
        nofold.without_fold("views")
    done = subprocess.run(
        nofold.command("views", consumer="c"), capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "invalid choice: 'views'" in done.stderr
    assert "Traceback" not in done.stderr
