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

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from vidpulse.keys import Keys, text
from vidpulse.settings import Settings

log = structlog.get_logger("vidpulse.dashboard.cache")

Compute = Callable[[], Awaitable[Any]]


def encode(value: Any) -> bytes:
    """JSON bytes of an answer (decimals as numbers, dates ISO 8601)."""
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def params_digest(params: Mapping[str, Any]) -> str:
    """A short, stable digest of normalized parameters (sorted, JSON)."""
    raw = orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


class Cache:
    """Answers by (endpoint, versions of its scopes, parameters); Redis errors bypass it."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys(settings.stream)
        self.ttl = settings.cache_ttl_seconds

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
            raw_versions = await self.client.mget([self.keys.cache_version(s) for s in scopes])
            versions = ".".join(text(v) if v is not None else "0" for v in raw_versions)
            key = self.keys.cache_entry(endpoint, versions, digest)
            hit = await self.client.get(key)
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", error=str(exc))
            return encode(await compute())
        if hit is not None:
            return hit.encode() if isinstance(hit, str) else hit
        body = encode(await compute())
        try:
            await self.client.set(key, body, ex=self.ttl)
        except (RedisError, OSError) as exc:
            log.warning("cache_unavailable", error=str(exc))
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
