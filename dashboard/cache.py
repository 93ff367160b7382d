"""Cache-aside in Redis for the API's answers, invalidated by version keys.

An answer is stored under a key naming the endpoint, the current values of the
version counters it depends on, and a digest of its normalized parameters. The
processors bump those counters right after each commit (`processors/cache_versions.py`),
so the next read computes a new key and misses: nothing is deleted, stale entries
are simply never asked for again and expire after `VIDPULSE_CACHE_TTL_SECONDS`.

The versions are read *before* the database is queried. If a commit lands between
the two, the answer (maybe computed from the older snapshot) is stored under the
older versions, which no later read uses: an answer is never served for versions
newer than the data it was computed from.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.responses import encode
from vidpulse.keys import Keys, text
from vidpulse.redisclient import cluster_of
from vidpulse.settings import Settings

log = structlog.get_logger("vidpulse.dashboard.cache")

Compute = Callable[[], Awaitable[Any]]


def params_digest(params: Mapping[str, Any]) -> str:
    """A short, stable digest of normalized parameters (sorted, JSON)."""
    raw = orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


# One round trip: read the version counters, build the entry key, GET it. Returns
# {versions, hit or false}. The entry key is not in KEYS, which only one Redis server
# allows: on a Redis Cluster the lookup is two steps instead (the versions, slot by
# slot, then the entry), each command naming its keys.
_LOOKUP = """
local versions = {}
for i, v in ipairs(redis.call('MGET', unpack(KEYS))) do
  versions[i] = v or '0'
end
local vector = table.concat(versions, '.')
local hit = redis.call('GET', ARGV[1] .. vector .. ':' .. ARGV[2])
return {vector, hit}
"""

_MEMO_MAX_ENTRIES = 1024
_MEMO_MAX_BODY = 1 << 20
_MEMO_MAX_BYTES = 32 << 20


class AnswerMemo:
    """ASGI middleware: each process keeps its successful GET answers for a moment.

    For `VIDPULSE_CACHE_LOCAL_MS` (default 250 ms, 0 turns it off) an identical
    request (path, query, Accept) is answered from memory, without routing, Redis or
    PostgreSQL: what a busy dashboard asks many times a second costs almost nothing,
    and an answer is still never older than that plus the processors' bump (a few
    milliseconds after their commit), inside the one second the dashboard promises.
    It sits behind the bearer check, so every request is still authenticated.
    """

    def __init__(self, app: ASGIApp, settings: Settings, prefix: str) -> None:
        self.app = app
        self.ttl = settings.cache_local_ms / 1000
        self.prefix = prefix
        self._held: dict[tuple[str, bytes, bytes], tuple[float, Message, bytes]] = {}
        self._held_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.ttl <= 0
            or scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        accept = b""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value
        key = (scope["path"], scope["query_string"], accept)
        now = time.monotonic()
        held = self._held.get(key)
        if held is not None and held[0] > now:
            await send(held[1])
            await send({"type": "http.response.body", "body": held[2]})
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = dict(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._keep(key, now, start, chunks)
            await send(message)

        await self.app(scope, receive, keep)

    def _keep(
        self, key: tuple[str, bytes, bytes], now: float, start: Message | None, chunks: list[bytes]
    ) -> None:
        body = b"".join(chunks)
        if start is None or start["status"] != 200 or len(body) > _MEMO_MAX_BODY:
            return
        if len(self._held) >= _MEMO_MAX_ENTRIES or self._held_bytes + len(body) > _MEMO_MAX_BYTES:
            # Everything in it expires within the moment anyway: start afresh.
            self._held.clear()
            self._held_bytes = 0
        self._held[key] = (now + self.ttl, start, body)
        self._held_bytes += len(body)


class Cache:
    """Answers by (endpoint, versions of its scopes, parameters); Redis errors bypass it."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys(settings.stream)
        self.ttl = settings.cache_ttl_seconds
        self._lookup = client.register_script(_LOOKUP)
        self._cluster = cluster_of(client)
        # Misses being computed in this process, by entry key: concurrent identical
        # misses (a page opened by many people right after a commit) query once.
        self._flights: dict[str, asyncio.Future[bytes]] = {}

    async def json(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        scopes: Sequence[str],
        compute: Compute,
    ) -> bytes:
        """The answer as JSON bytes: from Redis when fresh, else computed and stored."""
        digest = params_digest(params)
        try:
            vector, hit = await self._versions_and_hit(endpoint, scopes, digest)
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", error=str(exc))
            return encode(await compute())
        if hit:
            return hit.encode() if isinstance(hit, str) else bytes(hit)
        key = self.keys.cache_entry(endpoint, text(vector), digest)
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        return await self._compute_once(key, compute)

    async def _versions_and_hit(
        self, endpoint: str, scopes: Sequence[str], digest: str
    ) -> tuple[Any, Any]:
        versions = [self.keys.cache_version(s) for s in scopes]
        if self._cluster is None:
            vector, hit = await self._lookup(
                keys=versions, args=[self.keys.cache_entry(endpoint, "", "")[:-1], digest]
            )
            return vector, hit
        values = await self._cluster.mget_nonatomic(versions)
        vector = ".".join("0" if v is None else text(v) for v in values)
        return vector, await self._cluster.get(self.keys.cache_entry(endpoint, vector, digest))

    async def _compute_once(self, key: str, compute: Compute) -> bytes:
        """Compute and store the answer; identical misses meanwhile wait for this one."""
        flight: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            body = encode(await compute())
            try:
                await self.client.set(key, body, ex=self.ttl)
            except (RedisError, OSError) as exc:
                log.warning("cache_unavailable", error=str(exc))
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved here; waiters, if any, raise it too
            raise
        finally:
            del self._flights[key]
        flight.set_result(body)
        return body

    async def value(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        scopes: Sequence[str],
        compute: Compute,
    ) -> Any:
        """The answer as plain data (what the pages render)."""
        return orjson.loads(await self.json(endpoint, params, scopes, compute))
