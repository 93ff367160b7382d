"""Appending accepted events to the stream, with group commit and the milestone dedupe.

Concurrent requests hand their events to one `Appender`; while one round trip to
Redis is in flight, the events of the requests arriving meanwhile gather, and go
together in the next one. Each request is answered only once its own events are in
the stream. The dedupe key and the XADD of an event happen in one Lua script, so a
crash cannot leave a dedupe key without its event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

log = structlog.get_logger("vidpulse.ingest")

# KEYS[1] stream. ARGV: backlog limit, dedupe TTL, fields per event (5), then per event:
# dedupe key ('' when none), event JSON, received_at (ms), user agent, referer.
# Returns -1 when the stream's backlog is over the limit (nothing appended), else one
# 1 (appended) or 0 (duplicate milestone) per event.
_APPEND_LUA = """
local stream = KEYS[1]
if redis.call('XLEN', stream) >= tonumber(ARGV[1]) then
    return -1
end
local ttl = ARGV[2]
local width = tonumber(ARGV[3])
local out = {}
local n = 0
for i = 4, #ARGV, width do
    local dedupe = ARGV[i]
    local fresh = true
    if dedupe ~= '' then
        fresh = redis.call('SET', dedupe, '1', 'NX', 'EX', ttl)
    end
    n = n + 1
    if fresh then
        local fields = {'event', ARGV[i + 1], 'received_at', ARGV[i + 2]}
        if ARGV[i + 3] ~= '' then
            fields[#fields + 1] = 'user_agent'
            fields[#fields + 1] = ARGV[i + 3]
        end
        if ARGV[i + 4] ~= '' then
            fields[#fields + 1] = 'referer'
            fields[#fields + 1] = ARGV[i + 4]
        end
        redis.call('XADD', stream, '*', unpack(fields))
        out[n] = 1
    else
        out[n] = 0
    end
end
return out
"""
_WIDTH = 5
# Lua's unpack and Redis's argument handling stay comfortable below this many events.
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


class Appender:
    """Appends events to the stream; concurrent callers share round trips."""

    def __init__(
        self, redis: aioredis.Redis, *, stream: str, max_backlog: int, dedupe_ttl_seconds: int
    ) -> None:
        self._script = redis.register_script(_APPEND_LUA)
        self._stream = stream
        self._max_backlog = max_backlog
        self._ttl = dedupe_ttl_seconds
        self._waiting: list[tuple[list[Item], asyncio.Future[list[bool]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, items: list[Item]) -> list[bool]:
        """Append `items`; for each, True when appended, False when a duplicate milestone.

        Returns only once the events are in the stream. Raises Backpressure, or the
        Redis error, when they are not.
        """
        if not items:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group = self._take_group()
                try:
                    results = await self._call([item for items, _ in group for item in items])
                except Exception as exc:  # every waiter of this round trip gets the error
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for items, future in group:
                    if not future.done():
                        future.set_result(results[offset : offset + len(items)])
                    offset += len(items)
        finally:
            self._flusher = None

    def _take_group(self) -> list[tuple[list[Item], asyncio.Future[list[bool]]]]:
        taken = 0
        cut = 0
        for items, _ in self._waiting:
            if taken and taken + len(items) > _MAX_EVENTS_PER_CALL:
                break
            taken += len(items)
            cut += 1
        group, self._waiting = self._waiting[:cut], self._waiting[cut:]
        return group

    async def _call(self, items: list[Item]) -> list[bool]:
        args: list[bytes | str | int] = [self._max_backlog, self._ttl, _WIDTH]
        for item in items:
            args += (
                item.dedupe_key,
                item.event_json,
                item.received_at_ms,
                item.user_agent,
                item.referer,
            )
        reply = await self._script(keys=[self._stream], args=args)
        if reply == -1:
            raise Backpressure(self._stream)
        return [bool(r) for r in reply]
