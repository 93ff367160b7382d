"""The stream-consumer loop every processor runs on, written once.

Read a batch (own pending entries first, then idle entries of dead consumers, then
new ones), decode it, apply it in one PostgreSQL transaction, commit, then XACK; up
to VIDPULSE_BATCHES_IN_FLIGHT new batches at once, each on a lane (see lanes.py).
A batch that fails is retried entry by entry under savepoints so one poison entry
cannot hold back the rest; an entry that keeps failing goes to the dead-letter
stream after `max_deliveries`. While PostgreSQL or Redis is away the loop waits
with backoff and keeps the entries. A stop request (SIGTERM/SIGINT) lets the batches
in flight finish or abandons them before their commit, then returns.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import random
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from pydantic import ValidationError
from redis.exceptions import ClusterDownError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processors import cache_versions, forgotten, ledger
from processors.base import Entry, Prepare, Processor
from processors.lanes import LOCK_TURN, Lane, Stopped, Turn, Turnstile
from processors.partitions import Membership
from processors.store import at
from processors.streams import GroupStream, RawEntry, ensure_groups, trim_processed
from vidpulse import agents
from vidpulse.database import SchemaBehind, application_name, check_schema
from vidpulse.events import Event, InvalidEvent
from vidpulse.keys import Keys
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings
from vidpulse.telemetry import ProcessorMetrics

log = structlog.get_logger("vidpulse.processor")

# Besides lost connections: errors that say the database as a whole cannot take the
# batch now (a read-only node after a failover, a schema not migrated yet). They are
# outages to wait out, not poison: blaming each entry would dead-letter the stream.
_DB_DOWN = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.ReadOnlySqlTransaction,
)
# SQLSTATE class 42 (undefined table or column, privileges, ...) depends on the schema
# and the statement, never on an event's values: also an outage, never a poison entry.
_SCHEMA_CLASS = "42"
# On a Redis Cluster a failover also shows as CLUSTERDOWN replies and as slots no node
# serves for a moment: waited out like a lost connection.
_REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    RedisClusterException,
)
_TRIM_EVERY_S = 5.0
_PURGE_EVERY_S = 3600.0
_PURGE_RETRY_S = 60.0  # after a purge that could not reach the database
_CONSUMERS_EVERY_MAX_S = 60.0
_SCHEMA_LOG_EVERY_S = 30.0
_SCHEMA_POLL_S = 1.0


# Event.model_validate_json without its per-call wrapper: the same validator, all of
# the contract checked.
_validate_event = Event.__pydantic_validator__.validate_json


# A batch allocates tens of thousands of short-lived objects (entries, events, state
# rows), and each allocation burst makes the young generation collect, walking every
# object still alive: a third of a stateful processor's CPU. A processor's long-lived
# objects (modules, settings, caches) are frozen out of collection once started, and
# the young generation collects every 100,000 allocations instead of 700; reference
# counting frees the batch's objects as before, memory stays bounded.
GC_THRESHOLDS = (100_000, 50, 100)

# How long a thread may hold the interpreter lock while another waits for it (Python's
# default is 5 ms). A lane whose statements PostgreSQL has answered waits for the lock
# while the reading thread decodes, or the other lane folds; the sooner it has it, the
# sooner PostgreSQL has the lane's next statements. At 2 ms, draining the live-shaped
# backlog was 2-16 % faster than at 5 ms (heatmap, progress, metrics; alternating runs);
# at 0.2 ms the switching cost more than it gained.
SWITCH_INTERVAL_S = 0.002


def tune_process() -> None:
    """Set this process up for processing batches: garbage collection (GC_THRESHOLDS) and
    the interpreter lock's switch interval (SWITCH_INTERVAL_S)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def database_down(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot take any batch now (wait), not this batch."""
    if isinstance(exc, _DB_DOWN):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.Error) and (sqlstate or "").startswith(_SCHEMA_CLASS)


# A batch looks its rows up by key (sessions, pairs, counters) in tables whose hot part
# is in memory. With the default random_page_cost (4, for spinning disks) the planner
# prefers to hash a whole table of tens of thousands of sessions over 1,000 index
# lookups, so a batch's cost would grow with the table instead of with the batch.
RANDOM_PAGE_COST = 1.1


def connect(database_url: str, name: str = "vidpulse") -> psycopg.Connection[Any]:
    """A processor's connection to PostgreSQL, planning for key lookups (RANDOM_PAGE_COST);
    `name` is its application_name (`vidpulse-<processor>` from a consumer)."""
    conn = psycopg.connect(database_url, connect_timeout=5, **application_name(database_url, name))
    try:
        conn.execute(f"SET random_page_cost = {RANDOM_PAGE_COST}")
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def decode(raw: RawEntry) -> Entry:
    """Turn a stream entry into an Entry; raises ValueError when it breaks the format."""
    entry_id, fields = raw
    body = fields.get(b"event")
    if body is None:
        raise ValueError("stream entry has no 'event' field")
    try:
        event = _validate_event(body)
    except (ValidationError, InvalidEvent) as exc:
        raise ValueError(f"event does not match the contract: {exc}") from None
    received = fields.get(b"received_at")
    received_at = at(int(received)) if received else datetime.now(UTC)
    ua = fields.get(b"user_agent")
    ref = fields.get(b"referer")
    return Entry(
        stream_id=entry_id,
        event=event,
        received_at=received_at,
        user_agent=ua.decode(errors="replace") if ua else None,
        referer=ref.decode(errors="replace") if ref else None,
    )


Decoded = tuple[list[Entry], dict[str, str]]


def decode_all(batch: list[RawEntry], prepare: Prepare | None = None) -> Decoded:
    """The batch's entries decoded (and prepared, see Processor.prepare), and
    {stream id: error} of those breaking the format or refused by `prepare`."""
    entries: list[Entry] = []
    failures: dict[str, str] = {}
    for raw in batch:
        try:
            entry = decode(raw)
        except ValueError as exc:
            failures[raw[0]] = str(exc)
            continue
        if prepare is not None:
            try:
                # Entry is frozen for everyone downstream; this is its last step of making.
                object.__setattr__(entry, "prepared", prepare(entry))
            except Exception as exc:
                failures[raw[0]] = f"event cannot be prepared: {_describe(exc)}"
                continue
        entries.append(entry)
    return entries, failures


class Backoff:
    """Exponential backoff with jitter, waiting on the stop event."""

    def __init__(self, stop: threading.Event, first: float = 0.2, cap: float = 15.0) -> None:
        self.stop, self.first, self.cap = stop, first, cap
        self.delay = first

    def wait(self) -> None:
        if self.stop.wait(self.delay * random.uniform(0.5, 1.0)):
            raise Stopped
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first


@dataclass
class Timer:
    """An upkeep task the consumer loop runs every `every_s`, inside its own error boundary."""

    name: str
    every_s: float
    task: Callable[[], bool]  # False: could not run now, try again at the next turn
    due: float = 0.0

    def run_if_due(self, now: float, log: Any) -> None:
        if now < self.due:
            return
        self.due = now + self.every_s
        try:
            if not self.task():
                self.due = now
        except Stopped:
            raise
        except Exception:  # upkeep must never stop consumption
            log.exception("upkeep_failed", task=self.name)


class Consumer:
    """One consumer of one processor's group. `run()` loops; `process()` handles one batch."""

    def __init__(
        self,
        processor: Processor,
        settings: Settings,
        *,
        consumer: str,
        stop: threading.Event | None = None,
        burst: bool = False,
        exit_if_behind: bool = False,
    ) -> None:
        self.processor = processor
        self.exit_if_behind = exit_if_behind
        self.settings = settings
        self.keys = Keys.of(settings)
        self.stop = stop or threading.Event()
        self.burst = burst
        self.redis = sync_client(
            settings.redis_url,
            socket_timeout=max(5.0, settings.block_ms / 1000 + 5),
            socket_connect_timeout=2,
        )
        # One GroupStream per partition; `self.stream` is the one being worked on.
        self.streams = [
            GroupStream(
                self.redis,
                self.keys.partition(p),
                processor.group,
                consumer,
                settings.dlq_max_length,
            )
            for p in range(self.keys.partitions)
        ]
        self.stream = self.streams[0]
        self.owned: list[int] = [0]  # the partitions this consumer reads
        self.membership: Membership | None = None
        # Up to batches_in_flight batches are applied at once, one per lane (see lanes.py);
        # the lane pool's threads apply them while this thread reads the next.
        self._lanes = [Lane(n) for n in range(settings.batches_in_flight)]
        self._free: queue.LifoQueue[Lane] = queue.LifoQueue()
        for lane in reversed(self._lanes):
            self._free.put(lane)
        self._turnstile = Turnstile(self.stop)
        self._lane_pool: ThreadPoolExecutor | None = None
        self._in_flight: list[Future[None]] = []
        self._cache: Any = None  # the keyed state cache the lanes' connections share
        self.log = log.bind(processor=processor.name, consumer=consumer)
        consumers_every_s = min(_CONSUMERS_EVERY_MAX_S, settings.consumer_idle_ms / 2000)
        self._purge_timer = Timer("purge", _PURGE_EVERY_S, self._purge)
        self._timers = [
            Timer("trim", _TRIM_EVERY_S, self._trim),
            self._purge_timer,
            Timer("idle_consumers", consumers_every_s, self._forget_idle_consumers),
        ]
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[tuple[list[RawEntry], Decoded]] | None = None
        self._lingering_since: float | None = None  # when the last partial batch was read
        self.metrics = ProcessorMetrics(processor.name)

    @property
    def conn(self) -> psycopg.Connection[Any] | None:
        """The connection of the first lane that has one (None before any batch)."""
        return next((lane.conn for lane in self._lanes if lane.conn is not None), None)

    # -- the loop -----------------------------------------------------------------

    def run(self) -> None:
        """Consume until stopped (or, in burst mode, until nothing is new or pending)."""
        agents.warm()
        if self.keys.partitions > 1:
            self._run_partitioned()
            return
        self.log.info("consumer_starting", stream=self.keys.stream)
        try:
            self._redis_call(lambda: ensure_groups(self.redis, self.keys.stream))
            self._wait_for_schema()
            self._finish_own_pending()
            claim_cursor, next_claim = "0-0", 0.0
            while not self.stop.is_set():
                now = time.monotonic()
                if self._ahead is None and now >= next_claim:
                    claim_cursor = self._claim_round(claim_cursor)
                    if claim_cursor == "0-0":
                        next_claim = now + self._claim_interval()
                    continue
                if self._ahead is not None:
                    batch, decoded = self._ahead.result()
                    self._ahead = None
                else:
                    self._linger()
                    started = time.monotonic()
                    batch, decoded = self._read_new()
                    partial = 0 < len(batch) < self.settings.batch_size
                    self._lingering_since = started if partial else None
                if len(batch) >= self.settings.batch_size:
                    # A backlog: read and decode the next batch while this one commits.
                    self._ahead = self._reader().submit(self._read_new)
                if batch:
                    self._submit(batch, decoded)
                elif self.burst and self._redis_call(self.stream.pending_count) == 0:
                    self._reap(wait=True)
                    self.log.info("burst_done")
                    break
                elif self.burst:
                    next_claim = min(next_claim, now + 0.05)
                self._upkeep()
            self._finish_ahead()
        except Stopped:
            pass
        finally:
            self._close()
        self.log.info("consumer_stopped")

    # -- partitions (VIDPULSE_PARTITIONS > 1) -----------------------------------------

    def _run_partitioned(self) -> None:
        """The loop over the partitions this consumer is assigned, re-read every turn.

        Per partition: own pending entries first (on joining, and on taking it over),
        idle entries of other consumers (XAUTOCLAIM: those of a consumer that died or
        gave the partition up), then new ones, a batch of one partition at a time.
        """
        self.log.info("consumer_starting", stream=self.keys.stream, partitions=self.keys.partitions)
        self.owned = []
        try:
            self._redis_call(self._ensure_groups)
            self._wait_for_schema()
            self.membership = Membership(
                self.redis,
                self.keys.members(self.processor.group),
                self.stream.consumer,
                self.keys.partitions,
                self.settings.consumer_heartbeat_ms,
            )
            self._redis_call(self.membership.start)
            cursors: dict[int, str] = {}
            next_claim: dict[int, float] = {}
            turn = 0
            while not self.stop.is_set():
                owned = self.membership.owned()
                for p in owned:
                    if p not in cursors:  # taken on: what this consumer had pending first
                        self.stream = self.streams[p]
                        self._finish_own_pending()
                        cursors[p], next_claim[p] = "0-0", 0.0
                if owned != self.owned:
                    self.log.info("partitions_assigned", partitions=owned)
                for p in [p for p in cursors if p not in owned]:
                    del cursors[p], next_claim[p]
                self.owned = owned
                busy = False
                for p in owned:
                    now = time.monotonic()
                    if now >= next_claim[p]:
                        self.stream = self.streams[p]
                        cursors[p] = self._claim_round(cursors[p])
                        if cursors[p] == "0-0":
                            next_claim[p] = now + self._claim_interval()
                self._linger()
                started, full = time.monotonic(), False
                for i in range(len(owned)):
                    self.stream = self.streams[owned[(turn + i) % len(owned)]]
                    batch, decoded = self._read_new(block=False)
                    if batch:
                        busy = True
                        full = full or len(batch) >= self.settings.batch_size
                        self._submit(batch, decoded)
                # A round of partial batches only: let entries gather before the next.
                self._lingering_since = started if busy and not full else None
                turn += 1
                if not busy:
                    if self.burst and self._drained(owned):
                        self._reap(wait=True)
                        self.log.info("burst_done")
                        break
                    self._idle_wait(owned, turn)
                self._upkeep()
        except Stopped:
            pass
        finally:
            self._close()
        self.log.info("consumer_stopped")

    def _drained(self, owned: list[int]) -> bool:
        """Nothing pending in any partition this consumer reads (burst mode's end)."""
        return all(self._redis_call(self.streams[p].pending_count) == 0 for p in owned)

    def _idle_wait(self, owned: list[int], turn: int) -> None:
        """Nothing new anywhere: block on one partition for a moment (each in turn)."""
        wait_ms = min(self._block_ms(), max(50, self.settings.consumer_heartbeat_ms // 2))
        if not owned:
            if self.stop.wait(wait_ms / 1000):
                raise Stopped
            return
        self.stream = self.streams[owned[turn % len(owned)]]
        batch: list[RawEntry] = self._redis_call(
            lambda: self.stream.read_new(self.settings.batch_size, wait_ms)
        )
        if batch:
            self.process(batch)

    def _wait_for_schema(self) -> None:
        """Return once the database has every migration this code knows.

        Behind: raise SchemaBehind when told to exit, else wait, saying so now and then.
        """
        backoff = Backoff(self.stop)
        next_log = 0.0
        lane = self._lanes[0]
        while True:
            conn = self._connection(lane, backoff)
            try:
                with conn.transaction():
                    check_schema(conn)
                return
            except SchemaBehind as exc:
                if self.exit_if_behind:
                    raise
                if time.monotonic() >= next_log:
                    self.log.warning("schema_behind_waiting", error=str(exc))
                    next_log = time.monotonic() + _SCHEMA_LOG_EVERY_S
                if self.stop.wait(_SCHEMA_POLL_S):
                    raise Stopped from None
            except Exception as exc:
                if not database_down(exc):
                    raise
                self._database_lost(lane, exc, backoff)

    def _linger(self) -> None:
        """After a partial batch, let entries gather for up to batch_linger_ms (from that
        read) before reading again: a steady trickle makes a few larger batches a
        second rather than one per round trip. Not in burst mode, which drains a backlog."""
        if self._lingering_since is None or self.burst:
            return
        wait = self._lingering_since + self.settings.batch_linger_ms / 1000 - time.monotonic()
        if wait > 0 and self.stop.wait(wait):
            raise Stopped

    def _read_new(self, block: bool = True) -> tuple[list[RawEntry], Decoded]:
        block_ms = self._block_ms() if block else None
        batch: list[RawEntry] = self._redis_call(
            lambda: self.stream.read_new(self.settings.batch_size, block_ms)
        )
        return batch, decode_all(batch, self.processor.prepare)

    def _reader(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.processor.name}")
        return self._pool

    def _finish_ahead(self) -> None:
        """On a stop: apply the batch read ahead, if any, beside the batches in flight
        when a lane is free (else it stays pending: this consumer's restart, or a claim,
        takes it)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            batch, decoded = ahead.result()
            if batch and not self._free.empty():
                self._submit(batch, decoded)

    def _finish_own_pending(self) -> None:
        after = "0"
        while not self.stop.is_set():
            batch = self._redis_call(
                lambda after=after: self.stream.read_own_pending(after, self.settings.batch_size)
            )
            if not batch:
                return
            self.log.info("own_pending", batch=len(batch), first_id=batch[0][0])
            self.process(batch, redelivered=True)
            after = batch[-1][0]

    def _claim_round(self, cursor: str) -> str:
        self._reap(wait=True)  # this consumer's own batches in flight are not idle entries
        next_cursor: str
        claimed: list[RawEntry]
        next_cursor, claimed = self._redis_call(
            lambda: self.stream.claim_idle(
                self.settings.claim_idle_ms, cursor, self.settings.batch_size
            )
        )
        if claimed:
            self.log.info("claimed", batch=len(claimed), first_id=claimed[0][0])
            self.process(claimed, redelivered=True)
        return next_cursor

    def _claim_interval(self) -> float:
        return max(0.05, min(self.settings.claim_idle_ms / 2000, 5.0))

    def _block_ms(self) -> int:
        if self.burst:
            return min(self.settings.block_ms, 100)
        return self.settings.block_ms

    # -- one batch ----------------------------------------------------------------

    def process(
        self,
        batch: list[RawEntry],
        *,
        redelivered: bool = False,
        decoded: Decoded | None = None,
    ) -> None:
        """Apply one batch of stream entries, ack what committed, dead-letter what must go.

        `decoded` is `decode_all(batch)` when the caller has it already. Returns once
        the batch is through (see _submit for a batch applied while reading goes on).
        """
        lane = self._take_lane()
        self._run(lane, self._turnstile.ticket(), self.stream, batch, redelivered, decoded)

    def _submit(self, batch: list[RawEntry], decoded: Decoded) -> None:
        """Apply a batch of new entries on a free lane (waiting for one) and return:
        the batch is applied while this thread reads and decodes the next."""
        self._reap()
        lane = self._take_lane()
        turn = self._turnstile.ticket()
        future = self._lanes_pool().submit(
            self._run, lane, turn, self.stream, batch, False, decoded
        )
        self._in_flight.append(future)

    def _lanes_pool(self) -> ThreadPoolExecutor:
        """The threads the lanes' work runs on (one per lane)."""
        if self._lane_pool is None:
            self._lane_pool = ThreadPoolExecutor(
                len(self._lanes), thread_name_prefix=f"apply-{self.processor.name}"
            )
        return self._lane_pool

    def _run(
        self,
        lane: Lane,
        turn: Turn,
        stream: GroupStream,
        batch: list[RawEntry],
        redelivered: bool,
        decoded: Decoded | None,
    ) -> None:
        """Apply one batch on `lane` (see _process), then let its turn and lane go."""
        try:
            self._process(lane, turn, stream, batch, redelivered, decoded)
        finally:
            turn.close()
            self._free.put(lane)

    def _take_lane(self) -> Lane:
        """A free lane, once there is one (a batch in flight that failed raises here;
        a stop, while none is free, raises Stopped)."""
        while True:
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                self._reap()
                if self.stop.is_set():
                    raise Stopped from None

    def _reap(self, wait: bool = False) -> None:
        """Raise what a batch in flight raised once it is done (with `wait`: once every
        one is done, or Stopped on a stop: _close gives them the shutdown grace);
        forget the others that are done."""
        while wait and futures_wait(self._in_flight, timeout=0.1).not_done:
            if self.stop.is_set():
                raise Stopped
        done = [f for f in self._in_flight if f.done()]
        self._in_flight = [f for f in self._in_flight if not f.done()]
        for future in done:
            future.result()

    def _process(
        self,
        lane: Lane,
        turn: Turn,
        stream: GroupStream,
        batch: list[RawEntry],
        redelivered: bool,
        decoded: Decoded | None,
    ) -> None:
        started = time.perf_counter()
        lane.dropped = {}
        lane.busy = True
        if redelivered:
            batch = self._drop_exhausted(stream, batch)
        entries, decode_failures = (
            decoded if decoded is not None else decode_all(batch, self.processor.prepare)
        )
        failures = dict(decode_failures)
        raw_by_id = {raw[0]: raw for raw in batch}
        if self.processor.store is None:
            turn.close()  # nothing to lock in the reading order: no wait for anyone
        token = LOCK_TURN.set(turn)
        try:
            failures.update(self._commit(lane, entries))
        finally:
            LOCK_TURN.reset(token)
            turn.close()
            lane.busy = False
        self._bump_cache_versions(entries, failures)
        done = [entry_id for entry_id, _ in batch if entry_id not in failures]
        self._redis_call(lambda: stream.ack(done))
        if done:
            self.log.debug("batch_committed", batch=len(done), first_id=done[0], last_id=done[-1])
        if failures:
            self._handle_failures(stream, {i: (raw_by_id[i], e) for i, e in failures.items()})
        self.metrics.batch(
            applied=lane.applied,
            skipped=len(done) - lane.applied,
            failed=len(failures),
            seconds=time.perf_counter() - started,
        )
        if lane.dropped:
            self._erase_dropped(lane, stream)

    def _bump_cache_versions(self, entries: Sequence[Entry], failures: dict[str, str]) -> None:
        """After the commit, before the ack: the dashboard's cache learns what changed."""
        videos = [e.event.video_id for e in entries if e.stream_id not in failures]
        if videos:
            self._redis_call(
                lambda: cache_versions.bump(self.redis, self.keys, self.processor.name, videos)
            )

    def _drop_exhausted(self, stream: GroupStream, batch: list[RawEntry]) -> list[RawEntry]:
        """Dead-letter redelivered entries already delivered more than allowed.

        Such an entry may be one that kills the process outright, so it is not tried again.
        """
        counts = self._redis_call(lambda: stream.deliveries([i for i, _ in batch]))
        keep: list[RawEntry] = []
        for raw in batch:
            n = counts.get(raw[0])
            if n is None:  # acked meanwhile by another consumer
                continue
            if n > self.settings.max_deliveries:
                self._dead_letter(stream, raw, f"delivered {n} times without being applied", n)
            else:
                keep.append(raw)
        return keep

    def _handle_failures(
        self, stream: GroupStream, failed: dict[str, tuple[RawEntry, str]]
    ) -> None:
        counts = self._redis_call(lambda: stream.deliveries(list(failed)))
        for entry_id, (raw, error) in failed.items():
            n = counts.get(entry_id, 0)
            if n >= self.settings.max_deliveries:
                self._dead_letter(stream, raw, error, n)
            else:
                self.log.warning(
                    "entry_failed",
                    stream_id=entry_id,
                    deliveries=n,
                    error=error,
                    retry_after_ms=self.settings.claim_idle_ms,
                )

    def _dead_letter(self, stream: GroupStream, raw: RawEntry, error: str, deliveries: int) -> None:
        self._redis_call(lambda: stream.dead_letter(raw, error, deliveries))
        self.metrics.dead_lettered()
        self.log.error(
            "dead_lettered",
            stream_id=raw[0],
            deliveries=deliveries,
            error=error,
            dlq=stream.keys.dlq,
        )

    def _commit(self, lane: Lane, entries: Sequence[Entry]) -> dict[str, str]:
        """Apply entries in one transaction; on failure isolate the bad ones.

        Returns {stream id: error} for the entries that could not be applied. Waits
        (with backoff) while the database is unreachable.
        """
        lane.applied = 0
        if not entries:
            return {}
        backoff = Backoff(self.stop)
        while True:
            conn = self._connection(lane, backoff)
            lane.applied = 0
            try:
                with conn.transaction():
                    self._apply(lane, conn, entries)
                return {}
            except Exception as exc:
                if self.stop.is_set():  # stopping (or abandoned, see _close): keep it pending
                    raise Stopped from exc
                if database_down(exc):
                    self._database_lost(lane, exc, backoff)
                    continue
                if len(entries) == 1:
                    return {entries[0].stream_id: _describe(exc)}
                try:
                    lane.applied = 0
                    return self._commit_isolated(lane, conn, entries)
                except Exception as exc2:
                    if not database_down(exc2):
                        raise
                    self._database_lost(lane, exc2, backoff)

    def _commit_isolated(
        self, lane: Lane, conn: psycopg.Connection[Any], entries: Sequence[Entry]
    ) -> dict[str, str]:
        failures: dict[str, str] = {}
        with conn.transaction():
            for entry in entries:
                try:
                    with conn.transaction():
                        self._apply(lane, conn, [entry])
                except Exception as exc:
                    if database_down(exc):
                        raise
                    failures[entry.stream_id] = _describe(exc)
        self.log.warning("batch_isolated", batch=len(entries), failed=len(failures))
        return failures

    def _apply(self, lane: Lane, conn: psycopg.Connection[Any], entries: Sequence[Entry]) -> None:
        turn = LOCK_TURN.get()
        if turn is not None:  # before this transaction holds any row (see lanes.py)
            turn.wait()
        entries = self._drop_forgotten(lane, conn, entries)
        fresh = ledger.claim_fresh(conn, self.processor.ledger_table, entries)
        if fresh:
            self.processor.apply(conn, fresh, self.settings)
        lane.applied += len(fresh)

    # -- forgotten viewers (`vidpulse forget`) -------------------------------------

    def _drop_forgotten(
        self, lane: Lane, conn: psycopg.Connection[Any], entries: Sequence[Entry]
    ) -> Sequence[Entry]:
        """The entries less the events of forgotten viewers made before their erasure."""
        cutoffs = forgotten.cutoffs(conn, (e.event.viewer_id for e in entries))
        if not cutoffs:
            return entries
        keep: list[Entry] = []
        for entry in entries:
            cutoff = cutoffs.get(entry.event.viewer_id)
            if cutoff is not None and entry.event.ts <= cutoff:
                lane.dropped[entry.stream_id] = entry
            else:
                keep.append(entry)
        return keep

    def _erase_dropped(self, lane: Lane, stream: GroupStream) -> None:
        """Delete the dropped events' stream entries and the keys they named."""
        dropped, lane.dropped = lane.dropped, {}
        self._redis_call(lambda: stream.delete(list(dropped)))
        by_viewer: defaultdict[str, list[Event]] = defaultdict(list)
        for entry in dropped.values():
            by_viewer[entry.event.viewer_id].append(entry.event)
        for viewer, events in by_viewer.items():
            self._redis_call(
                lambda viewer=viewer, events=events: forgotten.erase_keys(
                    self.redis,
                    self.keys,
                    viewer,
                    [e.video_id for e in events],
                    [e.session_id for e in events],
                )
            )
        self.log.info("forgotten_dropped", events=len(dropped))

    # -- connections and upkeep ----------------------------------------------------

    def _connection(self, lane: Lane, backoff: Backoff) -> psycopg.Connection[Any]:
        while lane.conn is None or lane.conn.closed:
            if self.stop.is_set():
                raise Stopped
            try:
                self._open(lane)
                backoff.reset()
            except _DB_DOWN as exc:
                self.log.warning(
                    "database_unavailable",
                    error=str(exc).strip(),
                    retry_in_s=round(backoff.delay, 2),
                )
                backoff.wait()
        return lane.conn

    def _open(self, lane: Lane) -> psycopg.Connection[Any]:
        lane.conn = conn = connect(self.settings.database_url, f"vidpulse-{self.processor.name}")
        self.log.info("database_connected", lane=lane.number)
        store = self.processor.store
        if store is not None:  # the lanes share one cache of keyed states
            if self._cache is None:
                self._cache = store.cache(conn)
            else:
                store.share(conn, self._cache)
        return conn

    def _database_lost(self, lane: Lane, exc: Exception, backoff: Backoff) -> None:
        self.log.warning(
            "database_error", error=str(exc).strip(), retry_in_s=round(backoff.delay, 2)
        )
        if lane.conn is not None:
            lane.conn.close()
        lane.conn = None
        if self._cache is not None:  # the database met again may not be the same one
            self._cache.clear()
        backoff.wait()

    def _redis_call(self, call: Any) -> Any:
        backoff = Backoff(self.stop)
        while True:
            try:
                return call()
            except _REDIS_DOWN as exc:
                self.log.warning(
                    "redis_unavailable", error=str(exc), retry_in_s=round(backoff.delay, 2)
                )
                backoff.wait()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or group vanished (Redis restarted empty): recreate and go on.
                self.log.warning("group_missing_recreating", error=str(exc))
                self._ensure_groups()

    def _upkeep(self) -> None:
        now = time.monotonic()
        for timer in self._timers:
            timer.run_if_due(now, self.log)

    def _ensure_groups(self) -> None:
        for stream in self.keys.partition_streams:
            ensure_groups(self.redis, stream)

    def _trim(self) -> bool:
        for p in self.owned:
            trim_processed(self.redis, self.streams[p].keys.stream)
        return True

    def _purge(self) -> bool:
        """Start the retention purge on a free lane, beside the batches in flight: like
        them, it is given the shutdown grace on a stop, then cancelled."""
        lane = self._take_lane()
        self._in_flight.append(self._lanes_pool().submit(self._run_purge, lane))
        return True

    def _run_purge(self, lane: Lane) -> None:
        """Delete what has outlived its retention; a failure is logged, never raised
        (upkeep must not stop consumption), and a purge that could not reach the
        database is tried again _PURGE_RETRY_S later."""
        lane.busy = True
        try:
            conn = lane.conn
            if conn is None or conn.closed:
                try:
                    conn = self._open(lane)
                except _DB_DOWN:
                    self._purge_timer.due = time.monotonic() + _PURGE_RETRY_S
                    return
            with conn.transaction():
                purged = ledger.purge(
                    conn, self.processor.ledger_table, self.settings.applied_retention_days
                )
                if self.processor.purge is not None:
                    purged += self.processor.purge(conn, self.settings)
                purged += forgotten.purge(conn, self.settings)
        except Exception as exc:
            if self.stop.is_set():  # cancelled by the shutdown grace: rolled back
                self.log.info("purge_abandoned", error=_describe(exc))
            else:
                self.log.exception("upkeep_failed", task="purge")
        else:
            if purged:
                self.log.info("purged", rows=purged)
        finally:
            lane.busy = False
            self._free.put(lane)

    def _forget_idle_consumers(self) -> bool:
        """Remove the group's consumers idle past the limit that hold no pending entry."""
        for p in self.owned:
            removed = self.streams[p].forget_idle_consumers(self.settings.consumer_idle_ms)
            if removed:
                self.log.info("idle_consumers_removed", consumers=removed, partition=p)
        return True

    def _abandon_late_batches(self) -> None:
        """Let the batches in flight finish for up to shutdown_grace_seconds; cancel the
        statements of those still running then, which rolls them back (their entries
        stay pending, for this consumer's restart or a claim)."""
        grace = self.settings.shutdown_grace_seconds
        if not futures_wait(self._in_flight, timeout=grace).not_done:
            return
        self.stop.set()
        busy = [conn for lane in self._lanes if lane.busy and (conn := lane.conn) is not None]
        self.log.warning("batches_abandoned", batches=len(busy), grace_s=grace)
        for conn in busy:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)

    def _close(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # left pending: redelivered to this consumer or claimed
            ahead.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._lane_pool is not None:
            self._abandon_late_batches()
            self._lane_pool.shutdown(wait=True)
            for future in self._in_flight:
                failure = future.exception()
                if failure is not None and not isinstance(failure, Stopped):
                    self.log.error("batch_failed_on_stop", error=_describe(failure))
            self._in_flight = []
        if self.membership is not None:
            self.membership.leave()
        for stream in self.streams:
            try:
                stream.forget_consumer_if_idle()
            except Exception:  # best effort on the way out
                self.log.debug("forget_consumer_failed", exc_info=True)
        for lane in self._lanes:
            if lane.conn is not None:
                lane.conn.close()
        self.redis.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
