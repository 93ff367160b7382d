"""The optional per-client rate limit of the ingest's POST routes (`VIDPULSE_RATE_LIMIT`).

Counting is `limits`' fixed window in Redis, so every replica of the ingest shares one
count per client. The client is the socket's peer, or, behind
`VIDPULSE_TRUSTED_PROXY_HOPS` proxies, the address the outermost of them saw (taken
from the right of X-Forwarded-For, where each trusted proxy appended its peer: what a
client writes further left is its own claim and not believed). The address itself is
never written to Redis: counters are named by its keyed hash, and live one window.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpulse.keys import Keys
from vidpulse.redisclient import is_cluster
from vidpulse.settings import Settings

log = structlog.get_logger("vidpulse.ingest")


def client_address(scope: Scope, trusted_hops: int) -> str:
    """The client's address: the peer, or the one `trusted_hops` proxies vouch for."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else ""
    if trusted_hops == 0:
        return address
    forwarded: list[str] = [
        part.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for part in value.decode("latin-1").split(",")
    ]
    forwarded = [a for a in forwarded if a]
    if not forwarded:
        return address
    # Each trusted proxy appended its own peer: of the last `trusted_hops` entries, the
    # first was written by the outermost proxy and names the client it saw.
    return forwarded[-min(trusted_hops, len(forwarded))]


class RateLimitMiddleware:
    """429 (JSON, with Retry-After) for a client over its limit on any POST route."""

    def __init__(self, app: ASGIApp, /, settings: Settings) -> None:
        self.app = app
        self.items: list[RateLimitItem] = parse_many(settings.rate_limit)
        self.hops = settings.trusted_proxy_hops
        self.keys = Keys(settings.stream)
        self.redis_url = settings.redis_url
        self.retry_after = settings.retry_after_seconds
        self._limiter: FixedWindowRateLimiter | None = None
        self._cluster: RedisClusterStorage | None = None
        self._pool: object = None
        self._salt: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and is_cluster(self.redis_url):
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            client = await self._client_id(scope)
            limiter = self._limiter_for(scope)
            over = [item for item in self.items if not await limiter.hit(item, client)]
            wait = await self._retry_after(limiter, over, client) if over else 0
        except (RedisError, OSError) as exc:
            log.warning("redis_unavailable", error=str(exc))
            error = "the event store is unavailable; keep the events and retry later"
            await _send_json(send, 503, error, str(self.retry_after))
            return
        if over:
            error = f"over the rate limit of {over[0]} for this client; retry in {wait} s"
            await _send_json(send, 429, error, str(wait))
            return
        await self.app(scope, receive, send)

    def _closing(self, send: Send) -> Send:
        """`send`, closing the cluster client of the limiter as the app shuts down."""

        async def closing_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._cluster is not None:
                storage, self._cluster, self._limiter = self._cluster, None, None
                await cast(Any, storage.bridge).storage.aclose()  # its own RedisCluster
            await send(message)

        return closing_send

    def _limiter_for(self, scope: Scope) -> FixedWindowRateLimiter:
        """The limiter, on the connection pool of the app's Redis client (its lifespan's)."""
        redis: aioredis.Redis = scope["state"]["redis"]
        if is_cluster(self.redis_url):  # `limits`' own cluster client, made once
            if self._limiter is None:
                self._cluster = RedisClusterStorage(
                    "async+" + self.redis_url,
                    implementation="redispy",
                    key_prefix=self.keys.rate_limit_prefix,
                )
                self._limiter = FixedWindowRateLimiter(self._cluster)
            return self._limiter
        if self._limiter is not None and self._pool is redis.connection_pool:
            return self._limiter
        self._pool = redis.connection_pool
        storage = RedisStorage(
            "async+" + self.redis_url,
            implementation="redispy",
            key_prefix=self.keys.rate_limit_prefix,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._limiter = FixedWindowRateLimiter(storage)
        return self._limiter

    async def _client_id(self, scope: Scope) -> str:
        address = client_address(scope, self.hops)
        salt = self._salt or await self._load_salt(scope)
        return hashlib.blake2b(address.encode(), key=salt, digest_size=16).hexdigest()

    async def _load_salt(self, scope: Scope) -> bytes:
        """The deployment's salt, shared by its replicas through Redis (made once)."""
        redis: aioredis.Redis = scope["state"]["redis"]
        key = self.keys.rate_limit_salt
        await redis.set(key, secrets.token_hex(32), nx=True)
        salt = await redis.get(key)
        if not isinstance(salt, bytes):  # gone meanwhile (deleted by hand): made again next time
            raise RedisError(f"{key} vanished")
        self._salt = salt
        return self._salt

    @staticmethod
    async def _retry_after(
        limiter: FixedWindowRateLimiter, over: list[RateLimitItem], client: str
    ) -> int:
        reset = max([(await limiter.get_window_stats(i, client)).reset_time for i in over])
        return max(1, math.ceil(reset - time.time()))


async def _send_json(send: Send, status: int, error: str, retry_after: str) -> None:
    body = orjson.dumps({"error": error})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry_after.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
