"""Batches in flight side by side (processors/lanes.py): each on a lane of its own, a
session's events still applied in stream order, one cache shared by the lanes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from processors import ledger
from processors.base import Entry, Processor
from processors.lanes import Stopped, Turnstile
from processors.registry import PROCESSORS
from processors.runtime import Consumer
from tests.factories import BROWSER_UA, make_event
from vidpulse.events import now_ms
from vidpulse.settings import Settings

PROGRESS = PROCESSORS["progress"]
T0 = now_ms() - 3_600_000


def send(ingest: TestClient, *events: dict[str, Any]) -> None:
    response = ingest.post("/v1/events", json=list(events), headers={"user-agent": BROWSER_UA})
    assert response.status_code == 202, response.text


def coverage(db: psycopg.Connection[Any], session: str) -> list[float]:
    row = db.execute(
        "SELECT coverage FROM progress_sessions WHERE session_id = %s", (session,)
    ).fetchone()
    assert row is not None
    return list(row[0])


# -- the turnstile ------------------------------------------------------------------------


def test_batches_pass_the_turnstile_in_the_order_of_their_tickets() -> None:
    turnstile = Turnstile(threading.Event())
    first, second, third = turnstile.ticket(), turnstile.ticket(), turnstile.ticket()
    passed: list[int] = []

    def go(turn: Any) -> None:
        with turn:
            passed.append(turn.number)

    later = [threading.Thread(target=go, args=(t,)) for t in (third, second)]
    for thread in later:
        thread.start()
    time.sleep(0.3)
    assert passed == []  # both wait for the first ticket
    first.close()  # the first batch ended without locking anything: it lets them through
    for thread in later:
        thread.join(timeout=5)
    assert passed == [1, 2]
    with first:  # through already: a batch retried entry by entry does not wait again
        pass


def test_a_stop_ends_the_wait_at_the_turnstile() -> None:
    stop = threading.Event()
    turnstile = Turnstile(stop)
    turnstile.ticket()
    waiting = turnstile.ticket()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Stopped), waiting:
        pass


# -- the runtime --------------------------------------------------------------------------


def delayed(processor: Processor, session_event: str, seconds: float) -> Processor:
    """`processor`, applying the batch holding event `session_event` `seconds` late."""

    def apply(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
        if any(str(e.event.event_id) == session_event for e in entries):
            time.sleep(seconds)
        processor.apply(conn, entries, settings)

    return dataclasses.replace(processor, apply=apply)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_later_batch_waits_for_an_earlier_one_to_lock_their_session(
    make_settings: Any, ingest: TestClient, db: psycopg.Connection[Any], in_flight: int
) -> None:
    """A session claiming more than it could play is cut by the order its events apply
    in: lanes keep that order the stream's, even when the earlier batch is slower."""
    settings = make_settings(batch_size=2, batches_in_flight=in_flight)
    start = make_event("session_start", session_id="s-order", ts=T0, duration_s=600.0)
    # 2 s of span allow 16 x 2 + 30 = 62 s: this beacon takes all of them ...
    ahead = make_event("progress", session_id="s-order", ts=T0 + 2000, played=[[0, 62]],
                       position_s=62.0, duration_s=600.0)  # fmt: skip
    # ... so this one, next in the stream (its own batch), gets nothing. Applied first,
    # it would take 8 s and leave the beacon above 54: coverage [0, 54] and [62, 70].
    behind = make_event("progress", session_id="s-order", ts=T0 + 1000, played=[[62, 70]],
                        position_s=70.0, duration_s=600.0)  # fmt: skip
    send(ingest, start, ahead)
    send(ingest, behind)
    processor = delayed(PROGRESS, ahead["event_id"], 0.5)
    Consumer(processor, settings, consumer="c", stop=threading.Event(), burst=True).run()
    assert coverage(db, "s-order") == [0.0, 62.0]
    assert db.execute("SELECT count(*) FROM progress_applied").fetchone() == (3,)


def test_an_event_sent_twice_in_two_batches_in_flight_is_applied_once(
    make_settings: Any,
    ingest: TestClient,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client retry puts one event in two batches. The later batch must not claim its
    ledger row while it waits for the earlier one: the earlier one would wait for that
    row in PostgreSQL, and neither could go on (a wait PostgreSQL cannot see)."""
    settings = make_settings(batch_size=2, batches_in_flight=2)
    first = make_event("progress", session_id="s-a", ts=T0, played=[[0, 5]], position_s=5.0)
    twice = make_event("progress", session_id="s-b", ts=T0, played=[[0, 5]], position_s=5.0)
    last = make_event("progress", session_id="s-c", ts=T0, played=[[0, 5]], position_s=5.0)
    send(ingest, first, twice)
    send(ingest, twice, last)  # the retry: same event_id, the next batch
    claim_fresh = ledger.claim_fresh

    def slow_first(conn: Any, table: str, entries: Sequence[Entry]) -> list[Entry]:
        if any(str(e.event.event_id) == first["event_id"] for e in entries):
            time.sleep(0.5)  # the later batch is ready before this one claims anything
        return claim_fresh(conn, table, entries)

    monkeypatch.setattr(ledger, "claim_fresh", slow_first)
    stop = threading.Event()
    consumer = Consumer(PROGRESS, settings, consumer="c", stop=stop, burst=True)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    finished = not thread.is_alive()
    stop.set()  # a deadlock would end here: the batch waiting for its turn gives up
    thread.join(timeout=30)
    assert finished, "the two batches waited for each other"
    assert db.execute("SELECT count(*) FROM progress_applied").fetchone() == (3,)
    assert db.execute("SELECT sum(watch_seconds) FROM progress_sessions").fetchone() == (15,)


def beacons(sessions: list[str], n: int, start: float, end: float) -> list[dict[str, Any]]:
    """The n-th beacon of each session: media [start, end] played, n s after T0."""
    return [
        make_event("progress", session_id=s, ts=T0 + n * 1000, played=[[start, end]],
                   position_s=end, duration_s=600.0)
        for s in sessions
    ]  # fmt: skip


def test_the_lanes_share_one_cache_and_a_lost_database_empties_it(
    make_settings: Any, ingest: TestClient, db: psycopg.Connection[Any]
) -> None:
    settings = make_settings(batch_size=10, batches_in_flight=2)
    sessions = [f"s-lane-{i}" for i in range(10)]
    for n in range(1, 7):  # six batches of one beacon per session
        send(ingest, *beacons(sessions, n, (n - 1) * 5, n * 5))
    consumer = Consumer(PROGRESS, settings, consumer="c", stop=threading.Event(), burst=True)
    consumer.run()
    cache = consumer._cache
    assert cache is not None
    # Each session read once, whichever lane applied its batch: a batch takes the
    # states once it holds their rows, after the batch before it cached them.
    assert (cache.misses, cache.hits, cache.stale) == (10, 50, 0)
    assert all(coverage(db, s) == [0.0, 30.0] for s in sessions)

    # A lane whose database went away reconnects with an empty cache: the states it
    # had are read again from their rows.
    consumer = Consumer(PROGRESS, settings, consumer="d", stop=threading.Event())
    try:
        send(ingest, *beacons(sessions, 7, 30, 35))
        send(ingest, *beacons(sessions, 8, 35, 40))
        consumer.process(consumer.stream.read_new(10, 10))
        cache = consumer._cache
        assert cache is not None
        assert (cache.misses, cache.hits, len(cache)) == (10, 0, 10)
        assert consumer.conn is not None
        db.execute("SELECT pg_terminate_backend(%s)", (consumer.conn.info.backend_pid,))
        consumer.process(consumer.stream.read_new(10, 10))
        assert (cache.misses, cache.hits) == (20, 0)  # read again after the reconnect
    finally:
        consumer.stop.set()
        if consumer.conn is not None:
            consumer.conn.close()
        consumer.redis.close()
    assert all(coverage(db, s) == [0.0, 40.0] for s in sessions)
