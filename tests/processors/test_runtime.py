"""The shared consumer loop under real faults: kills, poison, dead consumers, outages, signals.

Processors run either in-process (a Consumer in a thread, or `process()` driven by hand)
or as real `vidpulse process raw` subprocesses. Redis and PostgreSQL are real; the faults
are real too: SIGKILL/SIGTERM, a PostgreSQL trigger, a database refusing connections,
a TCP proxy in front of Redis that is cut and restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from processors import raw
from processors.base import Entry
from processors.registry import PROCESSORS
from processors.runtime import GC_THRESHOLDS, SWITCH_INTERVAL_S, Consumer, Stopped, tune_process
from processors.streams import ensure_groups
from tests.commands import run_vidpulse, settings_env, start_vidpulse
from tests.factories import make_event, run_burst
from vidpulse.database import migrate
from vidpulse.events import now_ms
from vidpulse.settings import Settings

BACKLOG = 20_000

Event = dict[str, Any]


# -- helpers ---------------------------------------------------------------------------


def append_raw(client: redis.Redis, stream: str, items: list[Event | dict[str, Any]]) -> list[str]:
    """XADD entries in the ingest's format, pipelined; returns their ids.

    An item with an "event_id" is an event (stored as compact JSON in `event`, with
    received_at and a user agent); any other dict is taken as the entry's raw fields.
    """
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    for item in items:
        if "event_id" in item:
            fields: dict[str, Any] = {
                "event": orjson.dumps(item),
                "received_at": now_ms(),
                "user_agent": "pytest",
            }
        else:
            fields = item
        pipe.xadd(stream, fields)
        if len(pipe) >= 1000:
            ids += [i.decode() for i in pipe.execute()]
    ids += [i.decode() for i in pipe.execute()]
    return ids


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `condition` until it holds; fail naming `what` after a generous deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged(logs: Sequence[Mapping[str, Any]], event: str, text: str = "") -> int:
    """How many captured log lines are `event`, with `text` in their error when given."""
    return sum(e["event"] == event and text in str(e.get("error", "")) for e in logs[:])


def count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def others_in_transaction(db: psycopg.Connection[Any]) -> bool:
    """Whether another client session of the test database is inside a transaction."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND xact_start IS NOT NULL"
    ).fetchone()
    assert row is not None
    return bool(row[0])


def mid_batch(db: psycopg.Connection[Any], at_least: int) -> bool:
    """At least `at_least` rows are committed and a batch's transaction is open."""
    return count(db, "raw_applied") >= at_least and others_in_transaction(db)


def stored_ids(db: psycopg.Connection[Any]) -> list[str]:
    """event_id of every row of video_events (duplicates kept)."""
    return [r[0] for r in db.execute("SELECT event_id::text FROM video_events")]


def assert_exactly_once(db: psycopg.Connection[Any], events: list[Event]) -> None:
    """video_events holds each of `events` once and nothing else."""
    ids = stored_ids(db)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows are duplicates"
    expected = {e["event_id"] for e in events}
    assert not expected - set(ids), f"{len(expected - set(ids))} events are missing"
    assert set(ids) == expected
    assert count(db, "raw_applied") == len(events)


def group_info(client: redis.Redis, settings: Settings, group: str = "raw") -> dict[str, Any]:
    for info in client.xinfo_groups(settings.stream):
        if info["name"].decode() == group:
            return dict(info)
    raise AssertionError(f"no group {group}")


def pending_ids(client: redis.Redis, settings: Settings, group: str = "raw") -> list[str]:
    rows = client.xpending_range(settings.stream, group, min="-", max="+", count=1_000_000)
    return [r["message_id"].decode() for r in rows]


def dead_letters(client: redis.Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"{settings.stream}:dlq")]


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def acked_event_ids(client: redis.Redis, settings: Settings, group: str = "raw") -> set[str]:
    """event_ids of the entries the group has read and acknowledged."""
    last = _id_key(group_info(client, settings, group)["last-delivered-id"].decode())
    pending = set(pending_ids(client, settings, group))
    return {
        orjson.loads(fields[b"event"])["event_id"]
        for entry_id, fields in client.xrange(settings.stream)
        if _id_key(entry_id.decode()) <= last and entry_id.decode() not in pending
    }


def backlog(size: int) -> list[Event]:
    return [
        make_event("progress", video_id=f"video-{i % 97}", played=[[0, 1.5]]) for i in range(size)
    ]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def make_consumer() -> Iterator[Callable[[Settings, str], Consumer]]:
    """Factory: an in-process raw Consumer (not running) whose connections are closed after."""
    made: list[Consumer] = []

    def factory(settings: Settings, name: str) -> Consumer:
        consumer = Consumer(PROCESSORS["raw"], settings, consumer=name)
        made.append(consumer)
        return consumer

    yield factory
    for consumer in made:
        if consumer.conn is not None:
            consumer.conn.close()
        consumer.redis.close()


@pytest.fixture
def start_consumer() -> Iterator[Callable[[Settings, str], threading.Thread]]:
    """Factory: run a raw Consumer in a thread until the test ends (then stop and join)."""
    running: list[tuple[threading.Thread, threading.Event]] = []

    def factory(settings: Settings, name: str) -> threading.Thread:
        stop = threading.Event()
        consumer = Consumer(PROCESSORS["raw"], settings, consumer=name, stop=stop)
        thread = threading.Thread(target=consumer.run, name=f"consumer-{name}", daemon=True)
        thread.start()
        running.append((thread, stop))
        return thread

    yield factory
    for thread, stop in running:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "consumer did not stop"


@pytest.fixture
def reject_video(db: psycopg.Connection[Any]) -> Iterator[Callable[[str], Callable[[], None]]]:
    """Factory: a real trigger making PostgreSQL refuse video_events rows of one video_id.

    Returns a function that drops the trigger (the "fix"); dropped at the end regardless.
    """
    names: list[str] = []

    def drop(name: str) -> None:
        db.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON video_events").format(sql.Identifier(name))
        )
        db.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(name)))

    def factory(video_id: str) -> Callable[[], None]:
        name = f"vp_test_reject_{uuid.uuid4().hex[:10]}"
        names.append(name)
        db.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.video_id = {} THEN "
                "RAISE EXCEPTION 'test trigger refuses video %', NEW.video_id; "
                "END IF; RETURN NEW; END $$"
            ).format(sql.Identifier(name), sql.Literal(video_id))
        )
        db.execute(
            sql.SQL(
                "CREATE TRIGGER {0} BEFORE INSERT ON video_events "
                "FOR EACH ROW EXECUTE FUNCTION {0}()"
            ).format(sql.Identifier(name))
        )
        return lambda: drop(name)

    yield factory
    for name in names:
        drop(name)


@contextlib.contextmanager
def database_refusing_connections(
    database_url: str, keep: psycopg.Connection[Any]
) -> Iterator[None]:
    """PostgreSQL refuses new connections to the database and drops the open ones but `keep`."""
    name = conninfo_to_dict(database_url)["dbname"]
    admin_url = make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        ident = sql.Identifier(str(name))
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                (name, keep.info.backend_pid),
            )
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident))


class TcpProxy:
    """A real TCP relay to Redis that can be cut (all connections dropped) and restored."""

    def __init__(self, upstream_url: str) -> None:
        parts = redis.connection.parse_url(upstream_url)
        self.upstream = (parts.get("host", "localhost"), int(parts.get("port", 6379)))
        self.db = int(parts.get("db", 0))
        self.port = 0
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._stop.clear()
        self._listener = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._listener.start()

    def cut(self) -> None:
        """Stop listening and drop every relayed connection (both sides)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._socks.clear()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                upstream = socket.create_connection(self.upstream)
                with self._lock:
                    self._socks |= {client, upstream}
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def redis_proxy(settings: Settings) -> Iterator[TcpProxy]:
    """A running TcpProxy in front of the test's Redis, cut at the end."""
    proxy = TcpProxy(settings.redis_url)
    proxy.start()
    yield proxy
    proxy.cut()


# -- crash, restart, retries -----------------------------------------------------------


@pytest.mark.parametrize("restart_as", ["worker-1", "worker-2"], ids=["same-name", "other-name"])
def test_processor_killed_mid_batch_applies_every_event_exactly_once_after_restart(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    tmp_path: Path,
    restart_as: str,
) -> None:
    """SIGKILL mid-backlog, restart (same name: own pending; other name: claims): all once."""
    settings = make_settings(batch_size=500, log_level="warning")
    events = backlog(BACKLOG)
    append_raw(redis_client, settings.stream, events)
    env = settings_env(settings)
    faster = {**env, "VIDPULSE_BATCH_SIZE": "2000"}  # the restart only has to finish
    with (tmp_path / "killed.log").open("w") as log:
        proc = start_vidpulse("process", "raw", "--consumer", "worker-1", env=env, log=log)
        try:
            wait_for(lambda: mid_batch(db, 1000), "the processor to be mid-batch")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < count(db, "video_events") < BACKLOG

    result = run_vidpulse(
        "process", "raw", "--consumer", restart_as, "--burst", env=faster, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(db, events)
    assert pending_ids(redis_client, settings) == []


def test_client_retries_of_one_event_add_nothing(
    ingest: TestClient,
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """One event_id posted three times in a request and again in two more requests: one row."""
    retried = make_event("progress", played=[[0, 4]])
    others = [make_event("play"), make_event("pause")]
    assert ingest.post("/v1/events", json=[retried, others[0], retried, retried]).status_code == 202
    assert ingest.post("/v1/events", json=retried).status_code == 202
    assert ingest.post("/v1/events", json=[others[1], retried]).status_code == 202
    assert redis_client.xlen(make_settings().stream) == 7
    run_burst(make_settings(batch_size=2), "raw")  # retries spread over several batches
    assert_exactly_once(db, [retried, *others])
    payload = db.execute(
        "SELECT payload FROM video_events WHERE event_id = %s", (retried["event_id"],)
    ).fetchone()
    assert payload is not None
    assert payload[0]["played"] == [[0.0, 4.0]]
    assert payload[0]["user_agent"] == "testclient"


def test_batch_committed_but_never_acked_is_not_applied_again(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    redis_proxy: TcpProxy,
) -> None:
    """Redis lost between commit and XACK: the batch stays pending; redelivered, it adds nothing."""
    settings = make_settings(redis_url=redis_proxy.url)
    ensure_groups(redis_client, settings.stream)
    events = [make_event("play") for _ in range(20)]
    ids = append_raw(redis_client, settings.stream, events)
    stop = threading.Event()
    consumer = Consumer(PROCESSORS["raw"], settings, consumer="c", stop=stop)
    try:
        batch = consumer.stream.read_new(100, 10)
        redis_proxy.cut()
        threading.Timer(1.0, stop.set).start()  # give up on the ack after a while
        with pytest.raises(Stopped):
            consumer.process(batch)
    finally:
        if consumer.conn is not None:
            consumer.conn.close()
        consumer.redis.close()
    assert_exactly_once(db, events)
    assert pending_ids(redis_client, settings) == ids

    redis_proxy.start()
    run_burst(settings, "raw", consumer="c")
    assert_exactly_once(db, events)
    assert pending_ids(redis_client, settings) == []


def test_after_a_partial_batch_the_consumer_lingers_and_reads_what_came_as_one_batch(
    make_settings: Callable[..., Settings],
    start_consumer: Callable[[Settings, str], threading.Thread],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """A trickle of entries makes one batch per VIDPULSE_BATCH_LINGER_MS, not one per entry:
    the trickle's rows are written by one transaction (one xmin)."""
    settings = make_settings(batch_linger_ms=5000)  # far longer than the trickle, on any load
    ensure_groups(redis_client, settings.stream)
    later = [make_event("play") for _ in range(3)]
    start_consumer(settings, "c1")
    append_raw(redis_client, settings.stream, [make_event("play")])
    wait_for(lambda: count(db, "video_events") == 1, "the first batch")
    for event in later:  # a trickle: each would be a batch of its own without lingering
        time.sleep(0.1)
        append_raw(redis_client, settings.stream, [event])
    wait_for(lambda: count(db, "video_events") == 4, "every event")
    writers = db.execute(
        "SELECT count(DISTINCT xmin::text) FROM video_events WHERE event_id = ANY(%s::uuid[])",
        ([e["event_id"] for e in later],),
    ).fetchone()
    assert writers == (1,)


def test_a_processor_names_its_connections_in_pg_stat_activity(
    make_settings: Callable[..., Settings],
    make_consumer: Callable[[Settings, str], Consumer],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """An operator (and the bench) tells each processor's connections apart by their
    application_name, vidpulse-<processor>; one set in DATABASE_URL is kept."""
    name_of = "SELECT application_name FROM pg_stat_activity WHERE pid = %s"
    for url_name, expected in ((None, "vidpulse-raw"), ("ops-tool", "ops-tool")):
        settings = make_settings()
        if url_name is not None:
            url = make_conninfo(settings.database_url, application_name=url_name)
            settings = make_settings(database_url=url)
        ensure_groups(redis_client, settings.stream)
        append_raw(redis_client, settings.stream, [make_event("play")])
        consumer = make_consumer(settings, "named")
        consumer.process(consumer.stream.read_new(10, 10))
        assert consumer.conn is not None
        assert db.execute(name_of, (consumer.conn.info.backend_pid,)).fetchone() == (expected,)


# -- poison entries and dead letters ---------------------------------------------------


def test_undecodable_entries_are_isolated_then_dead_lettered_at_max_deliveries(
    make_settings: Callable[..., Settings],
    make_consumer: Callable[[Settings, str], Consumer],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """Bad entries fail alone, stay pending below max_deliveries, then go to the DLQ, acked."""
    settings = make_settings(max_deliveries=3)
    ensure_groups(redis_client, settings.stream)
    good = [make_event("play") for _ in range(4)]
    bad_fields: list[dict[str, Any]] = [
        {"event": b'{"event_id": "not json', "received_at": now_ms()},
        {"event": orjson.dumps({**make_event("play"), "colour": "red"}), "received_at": now_ms()},
        {"received_at": now_ms()},
    ]
    ids = append_raw(
        redis_client, settings.stream, [good[0], good[1], *bad_fields, good[2], good[3]]
    )
    bad_ids = ids[2:5]
    consumer = make_consumer(settings, "c1")

    consumer.process(consumer.stream.read_new(100, 10))
    assert sorted(stored_ids(db)) == sorted(e["event_id"] for e in good)
    assert pending_ids(redis_client, settings) == bad_ids
    assert dead_letters(redis_client, settings) == []

    _, claimed = consumer.stream.claim_idle(0, "0-0", 100)  # second delivery
    consumer.process(claimed, redelivered=True)
    assert pending_ids(redis_client, settings) == bad_ids
    assert dead_letters(redis_client, settings) == []

    _, claimed = consumer.stream.claim_idle(0, "0-0", 100)  # third: max_deliveries
    consumer.process(claimed, redelivered=True)
    assert pending_ids(redis_client, settings) == []
    letters = dead_letters(redis_client, settings)
    assert [d[b"original_id"].decode() for d in letters] == bad_ids
    for letter, original in zip(letters, bad_fields, strict=True):
        assert letter[b"group"] == b"raw"
        assert letter[b"deliveries"] == b"3"
        assert letter[b"consumer"] == b"c1"
        assert letter.get(b"event") == original.get("event")
    assert b"contract" in letters[0][b"error"]
    assert b"colour" in letters[1][b"error"]
    assert b"no 'event' field" in letters[2][b"error"]
    assert len(stored_ids(db)) == 4

    result = run_vidpulse("dlq", "replay", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert "replayed 3" in result.stdout
    assert dead_letters(redis_client, settings) == []
    replayed = redis_client.xrange(settings.stream, min=f"({ids[-1]}")
    assert [fields for _, fields in replayed] == [
        {k.encode(): str(v).encode() if isinstance(v, int) else v for k, v in f.items()}
        for f in bad_fields
    ]


def test_row_refused_by_postgresql_is_isolated_and_lands_after_fix_and_replay(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    reject_video: Callable[[str], Callable[[], None]],
) -> None:
    """A row PostgreSQL refuses fails alone (the rest commit), is dead-lettered, replays fine."""
    settings = make_settings(max_deliveries=2, claim_idle_ms=100)
    poison_video = f"poison-{uuid.uuid4().hex[:8]}"
    fix = reject_video(poison_video)
    events = [make_event("play", video_id=f"fine-{i}") for i in range(6)]
    poison = make_event("play", video_id=poison_video)
    ids = append_raw(redis_client, settings.stream, [*events[:3], poison, *events[3:]])

    run_burst(settings, "raw")
    assert_exactly_once(db, events)
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"original_id"].decode() == ids[3]
    assert letter[b"group"] == b"raw"
    assert letter[b"deliveries"] == b"2"
    assert b"test trigger refuses video " + poison_video.encode() in letter[b"error"]
    assert orjson.loads(letter[b"event"]) == poison
    assert pending_ids(redis_client, settings) == []

    fix()
    result = run_vidpulse("dlq", "replay", "--group", "raw", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    run_burst(settings, "raw")
    assert_exactly_once(db, [*events, poison])
    assert dead_letters(redis_client, settings) == []


def test_entry_its_processor_cannot_prepare_is_handled_as_undecodable(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """An entry on which the processor's `prepare` raises fails alone, like a bad entry:
    the others commit, it stays pending, and reaches the DLQ at max_deliveries."""
    settings = make_settings(max_deliveries=2)
    ensure_groups(redis_client, settings.stream)

    def prepare(entry: Entry) -> Any:
        if entry.event.video_id == "unpreparable":
            raise ValueError("no row for this one")
        return raw.row(entry)

    processor = dataclasses.replace(PROCESSORS["raw"], prepare=prepare)
    good = [make_event("play") for _ in range(3)]
    [bad_id] = append_raw(redis_client, settings.stream, [make_event(video_id="unpreparable")])
    append_raw(redis_client, settings.stream, good)
    consumer = Consumer(processor, settings, consumer="c1")
    try:
        consumer.process(consumer.stream.read_new(100, 10))
        assert sorted(stored_ids(db)) == sorted(e["event_id"] for e in good)
        assert pending_ids(redis_client, settings) == [bad_id]
        _, claimed = consumer.stream.claim_idle(0, "0-0", 100)  # second: max_deliveries
        consumer.process(claimed, redelivered=True)
    finally:
        consumer.redis.close()
        if consumer.conn is not None:
            consumer.conn.close()
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"original_id"].decode() == bad_id
    assert b"cannot be prepared: ValueError: no row for this one" in letter[b"error"]
    assert pending_ids(redis_client, settings) == []


def test_entry_delivered_too_often_is_dead_lettered_without_another_attempt(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """An entry already delivered max_deliveries times (it may kill the process) is not retried."""
    settings = make_settings(max_deliveries=3)
    ensure_groups(redis_client, settings.stream)
    crasher, fine = make_event("play"), make_event("play")
    ids = append_raw(redis_client, settings.stream, [crasher, fine])
    redis_client.xreadgroup("raw", "crashed", {settings.stream: ">"}, count=2)
    redis_client.xclaim(settings.stream, "raw", "crashed", 0, [ids[0]], retrycount=3)

    run_burst(settings, "raw", consumer="survivor")
    assert_exactly_once(db, [fine])
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"original_id"].decode() == ids[0]
    assert b"delivered 4 times" in letter[b"error"]
    assert pending_ids(redis_client, settings) == []


def test_entries_a_dead_consumer_never_acked_are_claimed_after_claim_idle(
    make_settings: Callable[..., Settings],
    make_consumer: Callable[[Settings, str], Consumer],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """Entries read by a consumer that died are not claimed before claim_idle_ms, then are."""
    settings = make_settings(claim_idle_ms=300)
    ensure_groups(redis_client, settings.stream)
    events = [make_event("seek") for _ in range(50)]
    append_raw(redis_client, settings.stream, events)
    redis_client.xreadgroup("raw", "dead", {settings.stream: ">"}, count=50)
    alive = make_consumer(settings, "alive")
    _, early = alive.stream.claim_idle(60_000, "0-0", 100)
    assert early == []

    run_burst(settings, "raw", consumer="alive")
    assert_exactly_once(db, events)
    assert pending_ids(redis_client, settings) == []
    consumers = {
        c["name"].decode(): c["pending"]
        for c in redis_client.xinfo_consumers(settings.stream, "raw")
    }
    assert consumers.get("dead") == 0


# -- outages ---------------------------------------------------------------------------


def consumer_pending(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """{consumer name: pending count} of the raw group."""
    return {
        c["name"].decode(): int(c["pending"])
        for c in client.xinfo_consumers(settings.stream, "raw")
    }


def test_idle_consumer_is_removed_only_once_its_pending_entries_are_claimed(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """Idle consumers go; one holding entries stays until they are claimed, then goes too."""
    settings = make_settings(consumer_idle_ms=300, claim_idle_ms=60_000)
    ensure_groups(redis_client, settings.stream)
    events = [make_event("play") for _ in range(5)]
    append_raw(redis_client, settings.stream, events)
    redis_client.xreadgroup("raw", "killed", {settings.stream: ">"}, count=5)  # never acked
    redis_client.xgroup_createconsumer(settings.stream, "raw", "idle-empty")
    assert consumer_pending(redis_client, settings) == {"killed": 5, "idle-empty": 0}

    stop = threading.Event()
    live = Consumer(PROCESSORS["raw"], settings, consumer="live", stop=stop)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: "idle-empty" not in consumer_pending(redis_client, settings),
            "the idle consumer without pending entries to be removed",
        )
        assert consumer_pending(redis_client, settings)["killed"] == 5
    finally:
        stop.set()
        thread.join(timeout=60)
    assert consumer_pending(redis_client, settings)["killed"] == 5

    claiming = make_settings(consumer_idle_ms=300, claim_idle_ms=300)
    stop = threading.Event()
    live = Consumer(PROCESSORS["raw"], claiming, consumer="claimer", stop=stop)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: "killed" not in consumer_pending(redis_client, settings),
            "the killed consumer to go once its entries are claimed",
        )
        wait_for(lambda: count(db, "video_events") == 5, "the claimed events to land")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert_exactly_once(db, events)


def test_postgresql_refusing_connections_delays_but_loses_nothing(
    ingest: TestClient,
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    start_consumer: Callable[[Settings, str], threading.Thread],
) -> None:
    """While PostgreSQL refuses connections events stay pending; once back all land once."""
    settings = make_settings(batch_size=50)
    first = [make_event("play") for _ in range(10)]
    ingest.post("/v1/events", json=first)
    thread = start_consumer(settings, "patient")
    wait_for(lambda: count(db, "video_events") == 10, "the first events to land")

    later = [make_event("pause") for _ in range(200)]
    with capture_logs() as logs, database_refusing_connections(settings.database_url, keep=db):
        for chunk in (later[:100], later[100:]):
            assert ingest.post("/v1/events", json=chunk).json()["accepted"] == 100
        wait_for(lambda: bool(pending_ids(redis_client, settings)), "the consumer to read")
        wait_for(
            lambda: logged(logs, "database_unavailable") >= 2,
            "the consumer to be refused twice while its batch waits",
        )
        info = group_info(redis_client, settings)
        assert info["pending"] > 0
        assert info["pending"] + info["lag"] == 200, (
            "entries were acked while the database was away"
        )
        assert count(db, "video_events") == 10
        assert thread.is_alive()

    wait_for(lambda: count(db, "video_events") == 210, "the held events to land", timeout=90)
    wait_for(lambda: not pending_ids(redis_client, settings), "the acks")
    assert_exactly_once(db, first + later)


@contextlib.contextmanager
def database_read_only(database_url: str, keep: psycopg.Connection[Any]) -> Iterator[None]:
    """New sessions of the database are read-only (as on a standby after a failover)."""
    name = str(conninfo_to_dict(database_url)["dbname"])
    admin_url = make_conninfo(database_url, dbname="postgres")
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
    )
    with psycopg.connect(admin_url, autocommit=True) as admin:
        ident = sql.Identifier(name)
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(ident)
        )
        try:
            admin.execute(terminate, (name, keep.info.backend_pid))
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(ident)
            )
            admin.execute(terminate, (name, keep.info.backend_pid))


def test_read_only_database_delays_but_dead_letters_nothing(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    start_consumer: Callable[[Settings, str], threading.Thread],
) -> None:
    """A database refusing writes (a failover) is an outage, not a poison: events wait, land."""
    settings = make_settings(max_deliveries=2, claim_idle_ms=100)
    first = [make_event("play") for _ in range(10)]
    append_raw(redis_client, settings.stream, first)
    start_consumer(settings, "failover")
    wait_for(lambda: count(db, "video_events") == 10, "the first events to land")

    later = [make_event("pause") for _ in range(30)]
    with capture_logs() as logs, database_read_only(settings.database_url, keep=db):
        append_raw(redis_client, settings.stream, later)
        wait_for(lambda: bool(pending_ids(redis_client, settings)), "the consumer to read")
        # More attempts than max_deliveries: taken for poison, the batch would be
        # dead-lettered by now (an isolation counts as an attempt too).
        wait_for(
            lambda: (
                logged(logs, "database_error", "read-only") + logged(logs, "batch_isolated")
                > settings.max_deliveries
                or bool(dead_letters(redis_client, settings))
            ),
            "the batch to be tried more often than max_deliveries against the read-only node",
        )
        assert dead_letters(redis_client, settings) == []
        assert count(db, "video_events") == 10

    wait_for(lambda: count(db, "video_events") == 40, "the held events to land", timeout=90)
    assert_exactly_once(db, first + later)
    assert dead_letters(redis_client, settings) == []


def test_processor_started_before_migrate_waits_for_the_schema(
    service_urls: tuple[str, str],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    start_consumer: Callable[[Settings, str], threading.Thread],
) -> None:
    """Against a database without the schema, the consumer waits (saying so) until migrate."""
    name = f"vidpulse_nomigrate_{uuid.uuid4().hex[:10]}"
    url = make_conninfo(service_urls[1], dbname=name)
    admin_url = make_conninfo(service_urls[1], dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        settings = make_settings(database_url=url, max_deliveries=2, claim_idle_ms=100)
        ensure_groups(redis_client, settings.stream)
        events = [make_event("play") for _ in range(10)]
        append_raw(redis_client, settings.stream, events)
        with capture_logs() as logs:
            start_consumer(settings, "early")
            wait_for(
                lambda: any(e["event"] == "schema_behind_waiting" for e in logs),
                "the consumer to say the schema is behind",
            )
        [said] = [e for e in logs if e["event"] == "schema_behind_waiting"]
        assert "run `vidpulse migrate`" in said["error"]
        assert pending_ids(redis_client, settings) == []  # waits before reading anything
        assert dead_letters(redis_client, settings) == []

        migrate(url)
        with psycopg.connect(url, autocommit=True) as db:
            wait_for(lambda: count(db, "video_events") == 10, "the events to land")
            assert_exactly_once(db, events)
        assert dead_letters(redis_client, settings) == []
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_missing_column_is_an_outage_waited_out_not_a_poison_entry(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    start_consumer: Callable[[Settings, str], threading.Thread],
) -> None:
    """A column the processor writes gone (UndefinedColumn): no dead letter; back, all land."""
    settings = make_settings(max_deliveries=2, claim_idle_ms=100)
    events = [make_event("play") for _ in range(20)]
    db.execute("ALTER TABLE video_events RENAME COLUMN position_s TO position_s_gone")
    try:
        with capture_logs() as logs:
            start_consumer(settings, "schema-gap")
            append_raw(redis_client, settings.stream, events)
            attempts = ("database_error", "batch_isolated")  # an outage, or a poison hunt
            wait_for(
                lambda: (
                    sum(e["event"] in attempts for e in logs) >= 3
                    or bool(dead_letters(redis_client, settings))
                ),
                "three attempts on the missing column",
            )
        assert dead_letters(redis_client, settings) == []
        assert count(db, "video_events") == 0
        assert len(pending_ids(redis_client, settings)) == len(events)
    finally:
        db.execute("ALTER TABLE video_events RENAME COLUMN position_s_gone TO position_s")
    wait_for(lambda: count(db, "video_events") == len(events), "the held events to land")
    assert_exactly_once(db, events)
    assert dead_letters(redis_client, settings) == []


def test_redis_going_away_delays_but_loses_nothing(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    redis_proxy: TcpProxy,
    start_consumer: Callable[[Settings, str], threading.Thread],
) -> None:
    """Cutting Redis mid-backlog stalls the consumer; restored, every event lands exactly once."""
    settings = make_settings(batch_size=100, redis_url=redis_proxy.url)
    events = backlog(10_000)
    append_raw(redis_client, settings.stream, events)
    with capture_logs() as logs:
        thread = start_consumer(settings, "through-proxy")
        wait_for(lambda: count(db, "video_events") >= 500, "the consumer to start applying")

        redis_proxy.cut()
        # A Redis call has failed three times running (retry_in_s 0.2, 0.4, 0.8): the
        # consumer is past the batch in flight and held at Redis.
        wait_for(
            lambda: any(
                e["event"] == "redis_unavailable" and e["retry_in_s"] >= 0.8 for e in logs[:]
            ),
            "the consumer to retry Redis three times running",
        )
        wait_for(lambda: not others_in_transaction(db), "the batch in flight to end")
        during = count(db, "video_events")
        retried = logged(logs, "redis_unavailable")
        wait_for(
            lambda: logged(logs, "redis_unavailable") > retried,
            "another attempt on Redis after the count",
        )
        assert count(db, "video_events") == during, "the consumer applied events without Redis"
    assert during < len(events)
    assert thread.is_alive()
    later = [make_event("play") for _ in range(5)]
    append_raw(redis_client, settings.stream, later)

    redis_proxy.start()
    wait_for(lambda: count(db, "video_events") == len(events) + 5, "the backlog", timeout=120)
    wait_for(lambda: not pending_ids(redis_client, settings), "the acks")
    assert_exactly_once(db, events + later)


# -- signals and burst mode ------------------------------------------------------------


def test_sigterm_stops_a_busy_processor_with_exit_0_and_no_partial_commit(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """SIGTERM mid-backlog: exit 0, whole batches committed, exactly the committed ones acked."""
    settings = make_settings(batch_size=500, log_level="warning")
    events = backlog(BACKLOG // 2)
    append_raw(redis_client, settings.stream, events)
    env = settings_env(settings)
    faster = {**env, "VIDPULSE_BATCH_SIZE": "2000"}  # the restart only has to finish
    with (tmp_path / "terminated.log").open("w") as log:
        proc = start_vidpulse("process", "raw", "--consumer", "busy", env=env, log=log)
        try:
            wait_for(lambda: mid_batch(db, 1000), "the processor to be mid-batch")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert code == 0, (tmp_path / "terminated.log").read_text()[-3000:]
    committed = stored_ids(db)
    assert 0 < len(committed) < len(events)
    assert len(committed) % 500 == 0, "a batch was committed in part"
    assert set(committed) == acked_event_ids(redis_client, settings)

    result = run_vidpulse(
        "process", "raw", "--consumer", "busy", "--burst", env=faster, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(db, events)


def test_sigterm_while_postgresql_refuses_connections_exits_0_keeping_the_batch(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """SIGTERM to a processor waiting for PostgreSQL: exit 0, its batch left pending, unlost."""
    settings = make_settings()
    first = [make_event("play") for _ in range(10)]
    append_raw(redis_client, settings.stream, first)
    env = settings_env(settings)
    with (tmp_path / "waiting.log").open("w") as log:
        proc = start_vidpulse("process", "raw", "--consumer", "waiting", env=env, log=log)
        try:
            wait_for(lambda: count(db, "video_events") == 10, "the first events to land")
            later = [make_event("pause") for _ in range(40)]
            with database_refusing_connections(settings.database_url, keep=db):
                append_raw(redis_client, settings.stream, later)
                wait_for(lambda: bool(pending_ids(redis_client, settings)), "a read batch")
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
                assert count(db, "video_events") == 10
                info = group_info(redis_client, settings)
                assert info["pending"] > 0
                assert info["pending"] + info["lag"] == 40, "acked without a commit"
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert code == 0, (tmp_path / "waiting.log").read_text()[-3000:]

    result = run_vidpulse("process", "raw", "--consumer", "waiting", "--burst", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(db, first + later)


BLOCKED_ON_A_LOCK = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"


def sigterm_once_blocked(
    proc: subprocess.Popen[bytes], db: psycopg.Connection[Any], what: str, settle_s: float = 0
) -> tuple[int, float]:
    """Once a statement waits on a lock (and `settle_s` more), SIGTERM `proc`: its exit
    code, and how long it took to exit. It is killed if still running after 30 s."""
    try:
        wait_for(lambda: db.execute(BLOCKED_ON_A_LOCK).fetchone() == (1,), what)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=30)
        return code, time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_sigterm_abandons_a_batch_still_blocked_after_the_shutdown_grace(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A batch that cannot commit (it waits for another session's transaction) is rolled
    back once VIDPULSE_SHUTDOWN_GRACE_SECONDS have passed since SIGTERM: exit 0, nothing
    acked."""
    settings = make_settings(shutdown_grace_seconds=1.0)
    events = [make_event("play") for _ in range(10)]
    append_raw(redis_client, settings.stream, events)
    log_path = tmp_path / "blocked.log"
    with psycopg.connect(settings.database_url) as locker, log_path.open("w") as log:
        # The ledger row of the batch's first event, inserted and never committed: the
        # batch's claim waits for this transaction.
        locker.execute("INSERT INTO raw_applied (event_id) VALUES (%s)", (events[0]["event_id"],))
        proc = start_vidpulse("process", "raw", "--consumer", "blocked",
                              env=settings_env(settings), log=log)  # fmt: skip
        try:
            # Claim rounds (every 0.15 s here) wait for the batch too: let one start.
            code, took = sigterm_once_blocked(proc, db, "the batch to block", settle_s=0.5)
        finally:
            locker.rollback()
    assert code == 0, log_path.read_text()[-3000:]
    assert took < 10, f"stopped {took:.1f} s after SIGTERM"
    assert "batches_abandoned" in log_path.read_text()
    assert count(db, "video_events") == 0
    assert len(pending_ids(redis_client, settings)) == 10

    result = run_vidpulse("process", "raw", "--consumer", "blocked", "--burst",
                          env=settings_env(settings))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(db, events)


def test_sigterm_abandons_a_purge_still_blocked_after_the_shutdown_grace(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """The retention purge (run at start, then hourly) gets the shutdown grace like a
    batch: one waiting on a lock is cancelled once the grace has passed, and the
    processor exits 0."""
    settings = make_settings(shutdown_grace_seconds=1.0)
    ensure_groups(redis_client, settings.stream)
    log_path = tmp_path / "purge.log"
    with psycopg.connect(settings.database_url) as locker, log_path.open("w") as log:
        # The purge deletes from the ledger, which this transaction holds in SHARE mode.
        locker.execute("LOCK TABLE raw_applied IN SHARE MODE")
        proc = start_vidpulse("process", "raw", "--consumer", "purging",
                              env=settings_env(settings), log=log)  # fmt: skip
        try:
            code, took = sigterm_once_blocked(proc, db, "the purge to block")
        finally:
            locker.rollback()
    text = log_path.read_text()
    assert code == 0, text[-3000:]
    assert took < 10, f"stopped {took:.1f} s after SIGTERM"
    assert "purge_abandoned" in text, text[-3000:]
    assert "upkeep_failed" not in text, text[-3000:]
    assert db.execute(BLOCKED_ON_A_LOCK).fetchone() == (0,)


def test_sigterm_while_redis_is_away_exits_0_and_nothing_is_applied_twice(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
    redis_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    """Redis cut mid-backlog (commits may lack their ack), then SIGTERM: exit 0; rerun: once."""
    settings = make_settings(batch_size=200, redis_url=redis_proxy.url, log_level="warning")
    events = backlog(10_000)
    append_raw(redis_client, settings.stream, events)
    log_path = tmp_path / "cut-off.log"
    with log_path.open("w") as log:
        proc = start_vidpulse(
            "process", "raw", "--consumer", "cut-off", env=settings_env(settings), log=log
        )
        try:
            wait_for(lambda: mid_batch(db, 1000), "the processor to be mid-batch")
            redis_proxy.cut()
            wait_for(
                lambda: "redis_unavailable" in log_path.read_text(),
                "the processor to meet the outage",
            )
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert code == 0, log_path.read_text()[-3000:]
    assert count(db, "video_events") < len(events)

    direct = settings_env(make_settings(batch_size=2000))
    result = run_vidpulse("process", "raw", "--consumer", "cut-off", "--burst", env=direct)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(db, events)
    assert pending_ids(redis_client, settings) == []


def test_burst_exits_0_once_nothing_is_new_or_pending(
    make_settings: Callable[..., Settings],
    db: psycopg.Connection[Any],
    redis_client: redis.Redis,
) -> None:
    """`process raw --burst` applies new and others' pending entries, then exits 0."""
    settings = make_settings()
    ensure_groups(redis_client, settings.stream)
    events = [make_event("play") for _ in range(30)]
    append_raw(redis_client, settings.stream, events)
    redis_client.xreadgroup("raw", "gone", {settings.stream: ">"}, count=10)

    result = run_vidpulse("process", "raw", "--burst", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert_exactly_once(db, events)
    info = group_info(redis_client, settings)
    assert info["pending"] == 0
    assert info["lag"] == 0


def test_burst_on_an_empty_stream_exits_0(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """With nothing to do, `process raw --burst` creates the groups and exits 0."""
    settings = make_settings()
    result = run_vidpulse("process", "raw", "--burst", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert group_info(redis_client, settings)["pending"] == 0


def test_tune_process_freezes_start_up_raises_the_young_threshold_and_shortens_switches() -> None:
    """`vidpulse process` collects rarely (start-up objects frozen, gen0 at 100,000) and
    hands the interpreter lock over every 2 ms."""
    before, switch = gc.get_threshold(), sys.getswitchinterval()
    try:
        tune_process()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert switch > SWITCH_INTERVAL_S
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        sys.setswitchinterval(switch)
