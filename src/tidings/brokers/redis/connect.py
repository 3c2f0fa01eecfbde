"""Open Redis or Redis Cluster from a URL.

``redis://`` / ``rediss://`` / ``unix://`` is one Redis; ``redis+cluster://host:port`` (or
``rediss+cluster://``, what ``--redis-cluster redis://host:port`` becomes) is a Redis
Cluster, found from that one node. On a cluster every key is hash-tagged (``cluster.py``)
and pub/sub is always sharded.
"""

from __future__ import annotations

from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

AnyRedis = aioredis.Redis | RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in _CLUSTER_SCHEMES


def cluster_url(url: str) -> str:
    """``redis://host:port`` as a Redis Cluster URL (``--redis-cluster``)."""
    scheme, rest = url.split("://", 1)
    return url if is_cluster_url(url) else f"{scheme}+cluster://{rest}"


def connect(url: str, *, max_connections: int, **options: Any) -> AnyRedis:
    """A client for ``url``: a ``RedisCluster`` for a cluster URL (``max_connections`` per
    master), else a ``Redis`` on a pool of ``max_connections``. ``options`` are the socket
    timeouts and retry policy, the same for both."""
    scheme, rest = url.split("://", 1)
    if scheme in _CLUSTER_SCHEMES:
        return RedisCluster.from_url(
            f"{_CLUSTER_SCHEMES[scheme]}://{rest}", max_connections=max_connections, **options
        )
    return aioredis.Redis.from_url(url, max_connections=max_connections, **options)


async def close(redis: AnyRedis) -> None:
    """Close the client and its connections (a ``Redis`` given its pool does not)."""
    if isinstance(redis, RedisCluster):
        await redis.aclose()
    else:
        await redis.aclose(close_connection_pool=True)
