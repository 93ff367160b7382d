"""Appending accepted events to the stream, with group commit and the milestone dedupe.

Concurrent requests hand their events to one `Appender`; while one round trip to
Redis is in flight, the events of the requests arriving meanwhile gather, and go
together in the next one. Each request is answered only once its own events are in
the stream. The dedupe key and the XADD of an event happen in one Lua script, so a
crash cannot leave a dedupe key without its event.

The events of a round trip travel as two script arguments, a layout of numbers and
one blob of bytes, rather than five arguments per event, and go over one of the
client's pooled connections as one command packed by hiredis: redis-py's generic
command path (argument packing in Python, retries, hooks) cost about ten times the
round trip itself, and it ran once per group of requests on the ingest's hot path.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

log = structlog.get_logger("vidpulse.ingest")

# KEYS[1] stream. ARGV[1] backlog limit, ARGV[2] dedupe TTL, ARGV[3] layout, ARGV[4] blob.
# The layout is comma-separated: per request "received_at,ua_len,referer_len,count",
# then per event of it "dedupe_len,event_len". The blob holds, in the same order, each
# request's user agent and referer, then each event's dedupe key ('' when none) and
# JSON. Returns -1 when the stream's backlog is over the limit (nothing appended),
# else one 1 (appended) or 0 (duplicate milestone) per event.
_APPEND_LUA = """
local stream = KEYS[1]
if redis.call('XLEN', stream) >= tonumber(ARGV[1]) then
    return -1
end
local ttl = ARGV[2]
local blob = ARGV[4]
local sub = string.sub
local layout = {}
for v in string.gmatch(ARGV[3], '[^,]+') do
    layout[#layout + 1] = v
end
local out = {}
local n = 0
local pos = 1
local i = 1
while i <= #layout do
    local received_at = layout[i]
    local ua_len = tonumber(layout[i + 1])
    local ref_len = tonumber(layout[i + 2])
    local count = tonumber(layout[i + 3])
    i = i + 4
    local ua = sub(blob, pos, pos + ua_len - 1)
    pos = pos + ua_len
    local ref = sub(blob, pos, pos + ref_len - 1)
    pos = pos + ref_len
    local fields = {'event', '', 'received_at', received_at}
    if ua_len > 0 then
        fields[#fields + 1] = 'user_agent'
        fields[#fields + 1] = ua
    end
    if ref_len > 0 then
        fields[#fields + 1] = 'referer'
        fields[#fields + 1] = ref
    end
    for _ = 1, count do
        local dedupe_len = tonumber(layout[i])
        local event_len = tonumber(layout[i + 1])
        i = i + 2
        local fresh = true
        if dedupe_len > 0 then
            fresh = redis.call('SET', sub(blob, pos, pos + dedupe_len - 1), '1', 'NX', 'EX', ttl)
            pos = pos + dedupe_len
        end
        n = n + 1
        if fresh then
            fields[2] = sub(blob, pos, pos + event_len - 1)
            redis.call('XADD', stream, '*', unpack(fields))
            out[n] = 1
        else
            out[n] = 0
        end
        pos = pos + event_len
    end
end
return out
"""
# Bounds one script call (and so how long Redis is busy with it, and the reply size).
_MAX_EVENTS_PER_CALL = 2000


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
        self._sha = hashlib.sha1(_APPEND_LUA.encode()).hexdigest()
        self._stream = stream
        self._max_backlog = max_backlog
        self._ttl = dedupe_ttl_seconds
        self._waiting: list[_Waiter] = []
        self._flusher: asyncio.Task[None] | None = None

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
        count = sum(len(b.events) for b in batches)
        if not count:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((batches, count, future))
        if self._flusher is None:
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
                for _, count, future in group:
                    if not future.done():
                        future.set_result(results[offset : offset + count])
                    offset += count
        finally:
            self._flusher = None

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

    async def _call(self, batches: list[Batch]) -> list[bool]:
        layout: list[str] = []
        blob: list[bytes] = []
        for batch in batches:
            layout.append(
                f"{batch.received_at_ms},{len(batch.user_agent)},{len(batch.referer)},"
                f"{len(batch.events)}"
            )
            blob.append(batch.user_agent)
            blob.append(batch.referer)
            for dedupe, event_json in batch.events:
                layout.append(f"{len(dedupe)},{len(event_json)}")
                if dedupe:
                    blob.append(dedupe)
                blob.append(event_json)
        reply = await self._run_script(
            (self._stream, self._max_backlog, self._ttl, ",".join(layout), b"".join(blob))
        )
        if reply == -1:
            raise Backpressure(self._stream)
        return [r == 1 for r in reply]

    async def _run_script(self, keys_and_args: tuple[Any, ...]) -> Any:
        """EVALSHA the append script (EVAL when Redis does not know it).

        The appender keeps one connection of the client's pool for itself (only one
        round trip is ever in flight), so no per-call checkout and its health checks.
        No retry here: a failed call fails its requests with 503 and their clients
        retry, which cannot append an event twice behind a 202 the way a blind resend
        could.
        """
        if self._conn is None:
            self._conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        conn = self._conn
        try:
            await conn.send_packed_command(
                hiredis.pack_command(("EVALSHA", self._sha, 1, *keys_and_args)),
                check_health=False,
            )
            try:
                return await conn.read_response()
            except NoScriptError:
                await conn.send_packed_command(
                    hiredis.pack_command(("EVAL", _APPEND_LUA, 1, *keys_and_args)),
                    check_health=False,
                )
                return await conn.read_response()
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
