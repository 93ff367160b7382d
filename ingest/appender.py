"""Appending accepted events to the stream, with group commit and the milestone dedupe.

Concurrent requests hand their events to one `Appender`; while one round trip to
Redis is in flight, the events of the requests arriving meanwhile gather, and go
together in the next one. Each request is answered only once its own events are in
the stream.

A round trip is one pipeline (no transaction), in request order: a plain XADD per
event, except a milestone, whose dedupe key (SET NX EX) and XADD happen in one call
of a small Lua script, so a crash cannot leave a dedupe key without its event. The
pipeline ends with an XLEN: the backlog mark (VIDPULSE_MAX_STREAM_LENGTH) is soft,
checked once a round against the length the previous round saw; while that is over
the mark, a round first asks XLEN again and is refused (503) when it still is.

The commands are packed by hiredis and their replies parsed by a hiredis reader of
the appender's own, over one of the client's pooled connections: redis-py's generic
command path (argument packing in Python, retries, hooks, a timeout context per
reply) cost far more than the round trip itself, on the ingest's hot path.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import hiredis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("vidpulse.ingest")

# KEYS[1] stream, KEYS[2] the milestone's dedupe key. ARGV[1] dedupe TTL, ARGV[2..] the
# entry's fields. Returns 1 (appended) or 0 (a duplicate milestone: nothing appended);
# when the XADD fails, the key is removed again and the error returned (Lua does not
# roll back), so a dedupe key never stays without its event.
_MILESTONE_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
    local added = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, 2))
    if type(added) == 'table' and added.err then
        redis.call('DEL', KEYS[2])
        return added
    end
    return 1
end
return 0
"""
# Bounds one round trip (and so how long Redis is busy with it, and the reply size).
_MAX_EVENTS_PER_CALL = 2000
_READ_SIZE = 1 << 16
# hiredis's stub types a command as a one-element tuple.
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
# The RESP header of a bulk string of each length an event's JSON usually has (formatting
# it per event cost more than the rest of packing the event).
_BULK_HEADS = [b"$%d\r\n" % n for n in range(4096)]


async def exchange(conn: AbstractConnection, packed: bytes, count: int) -> list[Any]:
    """Write `packed` on `conn` and read `count` replies (error replies as exceptions, in
    place), within the connection's socket timeout.

    Written here, not by redis-py's send_packed_command: its own time limit
    (asyncio.wait_for) made a task per round trip. On any error the caller must not
    reuse the connection: a reply may still be on its way.
    """
    if not conn.is_connected:
        await conn.connect()  # type: ignore[no-untyped-call]
    stream, writer = conn._reader, conn._writer
    if stream is None or writer is None:
        raise RedisConnectionError("the appender's connection is closed")
    reader = hiredis.Reader(replyError=ResponseError)
    replies: list[Any] = []
    try:
        async with asyncio.timeout(conn.socket_timeout):
            writer.write(packed)
            await writer.drain()
            while len(replies) < count:
                data = await stream.read(_READ_SIZE)
                if not data:
                    raise RedisConnectionError("Redis closed the connection mid-reply")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
    except TimeoutError:
        raise RedisTimeoutError("Redis did not answer the append in time") from None
    return replies


class Backpressure(Exception):
    """The stream's backlog is over its mark: clients should retry later."""


@dataclass(frozen=True, slots=True)
class Item:
    """One validated event ready for the stream."""

    event_json: bytes
    received_at_ms: int
    user_agent: str = ""
    referer: str = ""
    dedupe_key: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one request: what the request knew, then (dedupe key, JSON) per event."""

    received_at_ms: int
    user_agent: bytes
    referer: bytes
    events: Sequence[tuple[bytes, bytes]]


_Waiter = tuple[list[Batch], int, "asyncio.Future[list[bool]]"]


class Appender:
    """Appends events to the stream; concurrent callers share round trips."""

    def __init__(
        self, redis: aioredis.Redis, *, stream: str, max_backlog: int, dedupe_ttl_seconds: int
    ) -> None:
        self._redis = redis
        self._conn: AbstractConnection | None = None
        self._sha = hashlib.sha1(_MILESTONE_LUA.encode()).hexdigest().encode()
        self._loaded = False  # the script is known to the connection's Redis
        self._length: int | None = None  # the stream's length after the last round
        self._stream = stream
        self._max_backlog = max_backlog
        self._ttl = dedupe_ttl_seconds
        self._waiting: list[_Waiter] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline = False  # a caller's own round trip is in flight

    async def append(self, items: list[Item]) -> list[bool]:
        """Append `items`; for each, True when appended, False when a duplicate milestone.

        Returns only once the events are in the stream. Raises Backpressure, or the
        Redis error, when they are not.
        """
        batches: list[Batch] = []
        for item in items:
            pair = (item.dedupe_key.encode(), item.event_json)
            last = batches[-1] if batches else None
            if (
                last is not None
                and last.received_at_ms == item.received_at_ms
                and last.user_agent == item.user_agent.encode()
                and last.referer == item.referer.encode()
            ):
                last.events.append(pair)  # type: ignore[attr-defined]
            else:
                batches.append(
                    Batch(
                        item.received_at_ms,
                        item.user_agent.encode(),
                        item.referer.encode(),
                        [pair],
                    )
                )
        return await self.append_batches(batches)

    async def append_batch(self, batch: Batch) -> list[bool]:
        """Append the events of one request (see `append`)."""
        return await self.append_batches([batch])

    async def append_batches(self, batches: list[Batch]) -> list[bool]:
        count = 0
        for batch in batches:
            count += len(batch.events)
        if not count:
            return []
        if self._flusher is None and not self._inline:
            # Nothing in flight: this request's round trip goes now, from its own task
            # (no flusher task, future and wake-up for a lone request); requests that
            # arrive meanwhile gather for the flusher, started when it is back.
            self._inline = True
            try:
                result = await self._combined(batches)
            finally:
                self._inline = False
                if self._waiting and self._flusher is None:
                    self._flusher = asyncio.create_task(self._flush())
            if isinstance(result, Exception):
                raise result
            return result
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((batches, count, future))
        if self._flusher is None and not self._inline:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group = self._take_group()
                try:
                    results = await self._call([b for batches, _, _ in group for b in batches])
                except Exception as exc:  # every waiter of this round trip gets the error
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for batches, _, future in group:
                    mine = results[offset : offset + len(batches)]
                    offset += len(batches)
                    error = next((r for r in mine if isinstance(r, Exception)), None)
                    if future.done():
                        continue
                    if error is not None:  # not known appended, whole: 503, and a retry
                        future.set_exception(error)
                    else:
                        future.set_result(list(chain.from_iterable(mine)))  # type: ignore[arg-type]
        finally:
            self._flusher = None

    async def _combined(self, batches: list[Batch]) -> list[bool] | Exception:
        """One round trip for all `batches`: their results, or the first error."""
        results = await self._call(batches)
        if len(results) == 1:
            return results[0]
        error = next((r for r in results if isinstance(r, Exception)), None)
        return error if error is not None else list(chain.from_iterable(results))  # type: ignore[arg-type]

    def _take_group(self) -> list[_Waiter]:
        taken = 0
        cut = 0
        for _, count, _ in self._waiting:
            if taken and taken + count > _MAX_EVENTS_PER_CALL:
                break
            taken += count
            cut += 1
        group, self._waiting = self._waiting[:cut], self._waiting[cut:]
        return group

    async def _call(self, batches: list[Batch]) -> list[list[bool] | Exception]:
        """One round trip for `batches`: per batch, its per-event results or its error.

        Raises (for every batch) Backpressure, or the error that left the round's
        outcome unknown (the connection failed before every reply was read).
        """
        if self._length is None or self._length >= self._max_backlog:
            (length,) = await self._roundtrip(_pack(("XLEN", self._stream)), 1)
            if isinstance(length, Exception):
                raise length
            self._length = length
            if length >= self._max_backlog:
                raise Backpressure(self._stream)
        await self._connection()
        load = not self._loaded
        stream = self._stream.encode()
        ttl = str(self._ttl).encode()
        pack = _pack
        bulk_heads = _BULK_HEADS
        packed: list[bytes] = []
        count = 1  # commands sent: the closing XLEN
        if load:
            count += 1
            packed.append(pack(("SCRIPT", "LOAD", _MILESTONE_LUA)))
        for batch in batches:
            fields: tuple[bytes, ...] = (b"received_at", str(batch.received_at_ms).encode())
            if batch.user_agent:
                fields += (b"user_agent", batch.user_agent)
            if batch.referer:
                fields += (b"referer", batch.referer)
            # A plain XADD is its batch's head, the event's JSON, then the batch's fields,
            # so only the JSON's bulk string is encoded per event.
            head = b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$5\r\nevent\r\n" % (
                5 + len(fields),
                len(stream),
                stream,
            )
            tail = b"".join(b"\r\n$%d\r\n%s" % (len(f), f) for f in fields) + b"\r\n"
            count += len(batch.events)
            for dedupe, event_json in batch.events:
                if dedupe:
                    script = (self._sha, b"2", stream, dedupe, ttl, b"event", event_json)
                    packed.append(pack((b"EVALSHA", *script, *fields)))
                else:
                    size = len(event_json)
                    bulk = bulk_heads[size] if size < 4096 else b"$%d\r\n" % size
                    packed += (head, bulk, event_json, tail)
        packed.append(pack((b"XLEN", stream)))
        replies = await self._roundtrip(b"".join(packed), count)
        if load:
            self._loaded = not isinstance(replies[0], Exception)
            replies = replies[1:]
        self._length = replies[-1] if isinstance(replies[-1], int) else None
        results: list[list[bool] | Exception] = []
        at = 0
        for batch in batches:
            mine = replies[at : at + len(batch.events)]
            at += len(batch.events)
            if ResponseError not in set(map(type, mine)):  # hiredis's error replies
                # an entry id (appended), or the script's 1 (appended) or 0 (a duplicate)
                results.append(list(map(bool, mine)))
                continue
            error = next(r for r in mine if isinstance(r, Exception))
            if "NOSCRIPT" in str(error):
                self._loaded = False
            log.warning("append_failed", error=str(error))
            results.append(ResponseError(str(error)))
        return results

    async def _connection(self) -> AbstractConnection:
        """The appender's own connection (a new one may not know the script yet)."""
        if self._conn is None:
            self._conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            self._loaded = False
        return self._conn

    async def _roundtrip(self, packed: bytes, count: int) -> list[Any]:
        """Send `packed` and read `count` replies (error replies as exceptions, in place).

        The appender keeps one connection of the client's pool for itself (only one
        round trip is ever in flight), so no per-call checkout and its health checks.
        No retry here: a failed call fails its requests with 503 and their clients
        retry, which cannot append an event twice behind a 202 the way a blind resend
        could (the event ids deduplicate a retry downstream).
        """
        conn = await self._connection()
        try:
            return await exchange(conn, packed, count)
        except BaseException:
            # A reply may still be on its way: this connection is done with.
            self._conn = None
            await conn.disconnect()
            await self._redis.connection_pool.release(conn)
            raise

    async def close(self) -> None:
        """Hand the appender's connection back to the client's pool."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._redis.connection_pool.release(conn)
