"""Channel state: the last event of each cache channel (``{prefix}:{app#channel}:cache``,
expiring with the event)."""

from __future__ import annotations

from tidings.brokers.base import CachedEvent
from tidings.brokers.redis.link import RedisLink


class RedisCache:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._cluster = link.cluster

    async def set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        ttl = event.expires_at - now
        await self._link.call(
            lambda: self._cluster.cache_set(app_id, channel, event.message, ttl), lambda: None
        )

    async def get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        cached = await self._link.call(
            lambda: self._cluster.cache_get(app_id, channel), lambda: None
        )
        if cached is None:
            return None
        message, ttl = cached
        return CachedEvent(message, now + ttl)
