"""Claims of HTTP fallback sessions (``{prefix}:claim:{key}``: the owner's node id,
expiring unless renewed)."""

from __future__ import annotations

from tidings.brokers.redis.cluster import text
from tidings.brokers.redis.link import RedisLink


class RedisClaims:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._cluster = link.cluster
        self._node_id = link.node_id

    async def claim(self, key: str, ttl: float) -> str:
        name = self._cluster.claim_key(key)

        async def owner() -> str:
            async with self._link.redis.pipeline(transaction=False) as pipe:
                pipe.set(name, self._node_id, nx=True, px=int(ttl * 1000))
                pipe.get(name)
                _, holder = await pipe.execute()
            return text(holder) if holder is not None else self._node_id

        return await self._link.call(owner, lambda: self._node_id)

    async def refresh(self, keys: list[str], ttl: float) -> None:
        if not keys:
            return

        async def renew() -> None:
            async with self._link.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self._cluster.claim_key(key), self._node_id, px=int(ttl * 1000))
                await pipe.execute()

        await self._link.call(renew, lambda: None)
