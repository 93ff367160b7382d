"""Redis clients for every process: one server, or a Redis Cluster.

`REDIS_URL=redis+cluster://HOST:PORT` (or `rediss+cluster://` with TLS) names any node
of a cluster; redis-py discovers the others and routes each command by its key's slot.
Any other URL is one server, as redis-py reads it. The cluster clients are typed as the
plain ones: they offer the same commands, and every command vidpulse sends to a cluster
touches keys of one slot (see vidpulse/keys.py).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_url(url: str) -> str | None:
    """The plain URL of a node when `url` names a cluster, else None."""
    scheme, sep, rest = url.partition("://")
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    return f"{plain}{sep}{rest}" if sep and plain else None


def is_cluster(url: str) -> bool:
    return cluster_url(url) is not None


def _cluster_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A cluster has no databases but 0; health checks and the pool size apply per node.
    out = dict(kwargs)
    out.pop("health_check_interval", None)
    return out


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of `url`: a `redis.Redis`, or a `RedisCluster` for a cluster URL."""
    node = cluster_url(url)
    if node is None:
        return redis.Redis.from_url(url, **kwargs)
    return cast(redis.Redis, RedisCluster.from_url(node, **_cluster_kwargs(kwargs)))


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client of `url`: a `Redis`, or a `RedisCluster` for a cluster URL."""
    node = cluster_url(url)
    if node is None:
        return aioredis.Redis.from_url(url, **kwargs)
    return cast(aioredis.Redis, AsyncRedisCluster.from_url(node, **_cluster_kwargs(kwargs)))


def cluster_of(client: Any) -> AsyncRedisCluster | None:
    """The asyncio cluster client behind `client`, if it is one."""
    return client if isinstance(client, AsyncRedisCluster) else None
