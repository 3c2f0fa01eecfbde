"""Per-second counters of REST events (``{prefix}:{app}:rate:{second}``, kept 2 s)."""

from __future__ import annotations

from tidings.brokers.redis.link import RedisLink


class RedisRates:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._cluster = link.cluster
        self._seconds: dict[str, tuple[int, int]] = {}  # this node's: app -> (second, count)

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        second = int(now)
        start, local = self._seconds.get(app_id, (second, 0))
        local = (local if start == second else 0) + events
        self._seconds[app_id] = (second, local)
        return await self._link.call(
            lambda: self._cluster.count_backend_events(app_id, events, second), lambda: local
        )
