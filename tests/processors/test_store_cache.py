"""The keyed store's cache of states between batches (processors/store.py, _Cache).

A cached state is used only while its row is at the version it was saved at: what
another consumer changed, or a batch that rolled back, is read again from the row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from processors.base import Entry
from processors.registry import PROCESSORS
from processors.runtime import Consumer
from tests.factories import BROWSER_UA, make_event
from vidpulse.events import Event, now_ms
from vidpulse.settings import Settings

PROGRESS = PROCESSORS["progress"]
T0 = now_ms() - 3_600_000


def entry(n: int, start: float, end: float, session: str = "s-cache") -> Entry:
    """The n-th progress beacon of a session: media [start, end] played, n s after T0."""
    event = make_event(
        "progress",
        session_id=session,
        ts=T0 + n * 1000,
        played=[[start, end]],
        position_s=end,
        duration_s=600.0,
    )
    return Entry(
        f"{T0 + n * 1000}-0",
        Event.model_validate(event),
        datetime.now(UTC),
        user_agent=BROWSER_UA,
    )


def apply(conn: psycopg.Connection[Any], settings: Settings, *entries: Entry) -> None:
    with conn.transaction():
        PROGRESS.apply(conn, list(entries), settings)


def failing_batch(conn: psycopg.Connection[Any], settings: Settings, *entries: Entry) -> None:
    with conn.transaction():
        PROGRESS.apply(conn, list(entries), settings)
        raise RuntimeError("the batch fails after its save")


def stored(db: psycopg.Connection[Any], session: str = "s-cache") -> tuple[Any, ...]:
    row = db.execute(
        "SELECT watch_seconds, unique_seconds, position_s, coverage FROM progress_sessions"
        " WHERE session_id = %s",
        (session,),
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def two(settings: Settings) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    with psycopg.connect(settings.database_url) as a, psycopg.connect(settings.database_url) as b:
        yield a, b


def test_a_state_another_consumer_changed_is_read_again(
    settings: Settings, db: psycopg.Connection[Any], two: Any
) -> None:
    a, b = two
    apply(a, settings, entry(1, 0, 10))
    apply(b, settings, entry(2, 10, 20))  # a's cached state of the session is now stale
    apply(a, settings, entry(3, 20, 30))
    assert stored(db) == (30, 30, 30.0, [0.0, 30.0])
    cache = PROGRESS.store.cache(a)  # type: ignore[union-attr]
    assert (cache.hits, cache.stale) == (1, 1)


def test_a_rolled_back_batch_leaves_no_state_behind(
    settings: Settings, db: psycopg.Connection[Any], two: Any
) -> None:
    a, _ = two
    apply(a, settings, entry(1, 0, 10))
    with pytest.raises(RuntimeError, match="after its save"):
        failing_batch(a, settings, entry(2, 10, 20))  # saved, cached, then rolled back
    apply(a, settings, entry(3, 20, 30))
    assert stored(db) == (20, 20, 30.0, [0.0, 10.0, 20.0, 30.0])


def test_unchanged_rows_reuse_the_cache_across_batches(
    settings: Settings, db: psycopg.Connection[Any], two: Any
) -> None:
    a, _ = two
    sessions = [f"s-{i}" for i in range(20)]
    for n in range(1, 4):
        apply(a, settings, *(entry(n, (n - 1) * 10, n * 10, s) for s in sessions))
    cache = PROGRESS.store.cache(a)  # type: ignore[union-attr]
    assert (cache.misses, cache.hits, cache.stale) == (20, 40, 0)
    assert all(stored(db, s) == (30, 30, 30.0, [0.0, 30.0]) for s in sessions)


def test_the_runtime_commits_its_batches_so_its_cache_stays_valid(
    settings: Settings, ingest: TestClient, db: psycopg.Connection[Any]
) -> None:
    """The versions cached are the rows' only while a batch is its own transaction: a
    batch run in a savepoint would make every state stale."""
    stop = threading.Event()
    consumer = Consumer(PROGRESS, settings, consumer="cached", stop=stop)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        for n in range(1, 4):
            beacons = [
                make_event("progress", session_id=f"r-{i}", ts=T0 + n * 1000,
                           played=[[(n - 1) * 10, n * 10]], position_s=n * 10.0)
                for i in range(10)
            ]  # fmt: skip
            response = ingest.post("/v1/events", json=beacons, headers={"user-agent": BROWSER_UA})
            assert response.status_code == 202, response.text
            deadline = time.monotonic() + 60
            while db.execute("SELECT count(*) FROM progress_applied").fetchone()[0] < 10 * n:  # type: ignore[index]
                assert time.monotonic() < deadline, "progress did not apply the beacons"
                time.sleep(0.05)
        assert consumer.conn is not None
        cache = PROGRESS.store.cache(consumer.conn)  # type: ignore[union-attr]
        assert (cache.hits, cache.stale) == (20, 0)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert db.execute(
        "SELECT count(*) FROM progress_sessions WHERE watch_seconds = 30"
    ).fetchone() == (10,)


def test_the_cache_keeps_at_most_the_configured_sessions(
    make_settings: Any, db: psycopg.Connection[Any], two: Any
) -> None:
    settings = make_settings(state_cache_sessions=5)
    a, _ = two
    sessions = [f"s-{i:02d}" for i in range(20)]
    apply(a, settings, *(entry(1, 0, 10, s) for s in sessions))
    cache = PROGRESS.store.cache(a)  # type: ignore[union-attr]
    assert len(cache) == 5
    apply(a, settings, *(entry(2, 10, 20, s) for s in sessions))
    assert (cache.hits, cache.stale) == (5, 0)  # the 5 saved last, s-15 to s-19
    assert all(stored(db, s) == (20, 20, 20.0, [0.0, 20.0]) for s in sessions)


def test_a_state_cached_too_many_transactions_ago_is_read_again(
    settings: Settings, db: psycopg.Connection[Any], two: Any
) -> None:
    """Row versions are 32-bit transaction ids, which wrap around: past MAX_AGE
    transactions, a cached version is not trusted to tell the row's apart."""
    a, _ = two
    apply(a, settings, entry(1, 0, 10, "old"), entry(1, 0, 10, "recent"))
    cache = PROGRESS.store.cache(a)  # type: ignore[union-attr]
    assert cache.newest is not None
    cache.newest += cache.MAX_AGE  # as if 2^30 transactions had been saved since
    apply(a, settings, entry(2, 10, 20, "old"))
    assert (cache.hits, cache.misses) == (0, 3)
    assert stored(db, "old") == (20, 20, 20.0, [0.0, 20.0])
