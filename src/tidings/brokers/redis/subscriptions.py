"""Subscription sets in Redis (``{prefix}:{app#channel}:subs``, one member per socket
of every node, and ``{prefix}:{app}:channels``), changed by the Lua scripts."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.listener import Listener
from tidings.brokers.redis.mirror import Mirror
from tidings.brokers.redis.scripts import Scripts


class RedisSubscriptions:
    def __init__(
        self, link: RedisLink, scripts: Scripts, mirror: Mirror, listener: Listener
    ) -> None:
        self._link = link
        self._cluster = link.cluster
        self._scripts = scripts
        self._mirror = mirror
        self._listener = listener

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        sockets = self._mirror.subs.setdefault((app_id, channel), set())
        first_local = not sockets
        sockets.add(socket_id)
        self._mirror.changed()
        if first_local:
            await self._listener.listen(app_id, channel)
        return await self._link.call(
            lambda: self._scripts.subscribe(app_id, channel, socket_id), lambda: len(sockets)
        )

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        sockets = self._mirror.subs.get((app_id, channel), set())
        self._mirror.changed()
        sockets.discard(socket_id)
        if not sockets and self._mirror.subs.pop((app_id, channel), None) is not None:
            await self._listener.unlisten(app_id, channel)
        return await self._link.call(
            lambda: self._scripts.unsubscribe(app_id, channel, socket_id), lambda: len(sockets)
        )

    async def count(self, app_id: str, channel: str) -> int:
        local = len(self._mirror.subs.get((app_id, channel), ()))
        return await self._link.call(
            lambda: self._cluster.subscription_count(app_id, channel), lambda: local
        )

    async def channels(self, app_id: str) -> dict[str, int]:
        local = {ch: len(s) for (app, ch), s in self._mirror.subs.items() if app == app_id}
        return await self._link.call(lambda: self._cluster.channels(app_id), lambda: local)

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        return await self._link.call(
            lambda: self._cluster.occupied(app_id, channels),
            lambda: {c for c in channels if (app_id, c) in self._mirror.subs},
        )
