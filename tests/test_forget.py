"""`vidpulse forget`: a viewer erased from every table, key and stream entry, counts kept."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.rows import dict_row
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from processors.registry import PROCESSORS
from processors.runtime import Consumer
from processors.streams import ensure_groups
from tests.commands import run_vidpulse, settings_env
from tests.factories import BROWSER_UA, make_event, run_burst
from tools.forget import forget
from vidpulse.events import now_ms
from vidpulse.keys import Keys
from vidpulse.settings import Settings

GONE = "forget-me.42"
KEPT = "keep-me"
T0 = now_ms() - 3_600_000
AGGREGATES = ("video_metrics", "video_metrics_daily", "video_heatmap")


def _session(viewer: str, session: str, video: str, ts: int) -> list[dict[str, Any]]:
    ids = {"viewer_id": viewer, "session_id": session, "video_id": video}
    return [
        make_event("session_start", ts=ts, **ids),
        make_event("progress", ts=ts + 1, position_s=60.0, played=[[0, 60]], **ids),
        make_event("milestone", ts=ts + 2, milestone=50, **ids),
        make_event("complete", ts=ts + 3, position_s=100.0, played=[[60, 100]], **ids),
    ]


def _post(ingest: TestClient, path: str, body: Any) -> None:
    response = ingest.post(path, json=body, headers={"User-Agent": BROWSER_UA})
    assert response.status_code == 202, response.text


def _process(settings: Settings) -> None:
    for name in PROCESSORS:
        run_burst(settings, name)


def _xadd(client: redis.Redis, settings: Settings, *events: dict[str, Any]) -> list[bytes]:
    return [
        client.xadd(settings.stream, {"event": orjson.dumps(e), "received_at": now_ms()})
        for e in events
    ]


def _aggregates(db: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: db.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(t))
        ).fetchall()
        for t in AGGREGATES
    }


def _rows_naming(db: psycopg.Connection[Any], needle: str) -> dict[str, int]:
    """{table: rows} of every table whose row, as text (every column, payload included),
    contains `needle`."""
    tables = [
        r[0]
        for r in db.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p')"
        )
    ]
    found = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text LIKE %s")
        row = db.execute(query.format(sql.Identifier(table)), (f"%{needle}%",)).fetchone()
        if row and row[0]:
            found[table] = row[0]
    return found


def _redis_naming(client: redis.Redis, prefix: str, needle: str) -> list[str]:
    """Keys of the prefix whose name or any value (strings, hashes, stream fields) has `needle`."""
    hits = []
    raw = needle.encode()
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"stream":
            values = [v for _, fields in client.xrange(key) for v in fields.values()]
        if raw in key or any(raw in v for v in values):
            hits.append(key.decode())
    return hits


def _prefix(settings: Settings) -> str:
    return settings.stream.rsplit(":", 1)[0]


def test_forget_erases_every_row_key_and_entry_and_keeps_the_counts(
    ingest: TestClient, settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """After forget no row, key, stream entry or dead letter names the viewer; counts stay."""
    keys = Keys(settings.stream)
    _post(ingest, "/v1/events", _session(GONE, "s-gone-1", "v1", T0))
    _post(ingest, "/v1/events", _session(GONE, "s-gone-2", "v2", T0 + 10))
    _post(ingest, "/v1/events", _session(KEPT, "s-kept", "v1", T0 + 20))
    _post(ingest, "/analytics", {"videoId": "v3", "event": "watched_50_percent",
                                 "ts": T0 // 1000, "userId": GONE})  # fmt: skip
    view = {"video_id": "v4", "session_id": "s-gone-report", "video_duration_seconds": 600,
            "user_id": GONE}  # fmt: skip
    _post(ingest, "/api/analytics/video-view", view)
    _process(settings)
    # Applied by some processors only when forget runs: found by its stream entries.
    _xadd(redis_client, settings, *_session(GONE, "s-gone-lag", "v2", T0 + 40))
    run_burst(settings, "heatmap")
    run_burst(settings, "metrics")
    before = _aggregates(db)
    assert _rows_naming(db, GONE)  # the test sees what it looks for
    assert _redis_naming(redis_client, _prefix(settings), GONE)

    # Still to be processed, and dead letters (some whose event is not even an object).
    _xadd(redis_client, settings, *_session(GONE, "s-gone-late", "v1", T0 + 30))
    dead = {"event": orjson.dumps(make_event("play", viewer_id=GONE)), "error": "x"}
    redis_client.xadd(keys.dlq, dead)  # type: ignore[arg-type]
    poison = {"event": b'{"viewer_id": "' + GONE.encode() + b'", "ts": ', "error": "bad"}
    redis_client.xadd(keys.dlq, poison)  # type: ignore[arg-type]
    listed = {"event": b'[{"viewer_id": "' + GONE.encode() + b'"}]', "error": "not an object"}
    redis_client.xadd(keys.dlq, listed)  # type: ignore[arg-type]
    redis_client.xadd(keys.dlq, {"event": orjson.dumps(make_event(viewer_id=KEPT))})

    erased = forget(db, redis_client, keys, GONE)
    _process(settings)

    assert _rows_naming(db, GONE) == {}
    assert _rows_naming(db, "s-gone") == {}  # nor of their sessions
    assert _redis_naming(redis_client, _prefix(settings), GONE) == []
    assert _aggregates(db) == before
    assert erased.stream_entries >= 8  # the late ones, and those not trimmed yet
    assert erased.dead_letters == 3
    assert erased.rows["video_events"] == 10
    assert erased.keys >= 4  # milestone and watched-50% dedupe keys, the video-view session
    assert "video_events 10" in erased.summary()
    assert _rows_naming(db, KEPT)["video_events"] == 4
    assert redis_client.xlen(keys.dlq) == 1


def test_an_event_in_flight_is_dropped_and_later_activity_counts(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis
) -> None:
    """Events read but uncommitted, or appended while forget runs, are dropped; later ones count."""
    keys = Keys(settings.stream)
    ensure_groups(redis_client, settings.stream)
    consumer = Consumer(PROCESSORS["raw"], settings, consumer="c1", stop=threading.Event())
    try:
        _xadd(redis_client, settings, *_session(GONE, "s-1", "v1", T0))
        batch = consumer.stream.read_new(100, 100)
        assert len(batch) == 4
        forget(db, redis_client, keys, GONE)
        consumer.process(batch)  # read before forget, committed after: dropped
    finally:
        consumer._close()
    # Appended by an ingest that was mid-request (its milestone dedupe key set), and new
    # activity later than the erasure plus the ingest's clock tolerance.
    late = make_event("milestone", viewer_id=GONE, ts=now_ms(), video_id="v1", milestone=25)
    redis_client.set(keys.milestone_dedupe("v1", GONE, 25), 1)
    redis_client.hset(keys.legacy_session("session-1"), mapping={"viewer_id": GONE})
    newer = make_event("play", viewer_id=GONE, ts=now_ms() + 6 * 60_000, session_id="s-2")
    _xadd(redis_client, settings, late, newer)
    _process(settings)

    rows = db.execute("SELECT event_id::text FROM video_events").fetchall()
    assert rows == [(newer["event_id"],)]
    assert redis_client.xpending(settings.stream, "raw")["pending"] == 0
    entries: Any = redis_client.xrange(settings.stream)
    assert {orjson.loads(f[b"event"])["event_id"] for _, f in entries} <= {newer["event_id"]}
    assert redis_client.exists(keys.milestone_dedupe("v1", GONE, 25)) == 0
    assert redis_client.exists(keys.legacy_session("session-1")) == 0
    assert redis_client.xlen(keys.dlq) == 0


@pytest.mark.parametrize("restart_as", ["c1", "c2"], ids=["own-pending", "claimed"])
def test_deleted_pending_entries_are_acked_not_dead_lettered(
    settings: Settings, db: psycopg.Connection[Any], redis_client: redis.Redis, restart_as: str
) -> None:
    """Pending entries XDEL'd before a consumer gets back to them are skipped and acked."""
    ensure_groups(redis_client, settings.stream)
    ids = _xadd(redis_client, settings, *(make_event(session_id=f"s{i}") for i in range(5)))
    consumer = Consumer(PROCESSORS["raw"], settings, consumer="c1", stop=threading.Event())
    try:  # c1 reads the batch and dies before its commit
        assert len(consumer.stream.read_new(100, 100)) == 5
    finally:
        consumer._close()
    redis_client.xdel(settings.stream, ids[0], ids[2], ids[3])
    with capture_logs() as logs:
        run_burst(settings, "raw", consumer=restart_as)

    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == []
    assert db.execute("SELECT count(*) FROM video_events").fetchone() == (2,)
    assert redis_client.xpending(settings.stream, "raw")["pending"] == 0
    assert redis_client.xlen(Keys(settings.stream).dlq) == 0


def test_forget_command_prints_one_line_and_refuses_a_bad_id(
    settings: Settings, redis_client: redis.Redis, db: psycopg.Connection[Any]
) -> None:
    """`vidpulse forget` exits 0 with a summary line, again too; a bad id exits 2."""
    _xadd(redis_client, settings, make_event(viewer_id=GONE))
    env = settings_env(settings)
    result = run_vidpulse("forget", GONE, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "stream entries 1" in result.stdout
    again = run_vidpulse("forget", GONE, env=env)  # idempotent: nothing left to erase
    assert again.returncode == 0, again.stderr
    assert "stream entries 0" in again.stdout
    bad = run_vidpulse("forget", "no spaces/here", env=env)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "invalid viewer id" in bad.stderr
    assert db.execute("SELECT count(*) FROM forgotten_viewers").fetchone() == (1,)
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT viewer_hash FROM forgotten_viewers").fetchone()
    assert row is not None
    assert GONE not in row["viewer_hash"]
