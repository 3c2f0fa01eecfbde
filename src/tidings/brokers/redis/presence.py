"""Presence members and signed-in users in Redis, changed by the Lua scripts.

``{prefix}:{app#channel}:members`` maps each user to its user_info, and
``{prefix}:{app#channel}:msock:{user}`` holds the user's sockets there (of every node); a
user is added with its first socket and removed with its last. ``{prefix}:{app}:user:{user}``
holds a signed-in user's sockets.
"""

from __future__ import annotations

from tidings.brokers.base import PresenceJoin
from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.mirror import Mirror
from tidings.brokers.redis.scripts import Scripts
from tidings.protocol.session import Member


class RedisPresence:
    def __init__(self, link: RedisLink, scripts: Scripts, mirror: Mirror) -> None:
        self._link = link
        self._cluster = link.cluster
        self._scripts = scripts
        self._mirror = mirror

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        local = self._mirror.presence.setdefault((app_id, channel), {})
        local_users = {m.user_id for m in local.values()}
        self._mirror.changed()

        async def shared() -> PresenceJoin:
            accepted, first, members = await self._scripts.presence_join(
                app_id, channel, socket_id, member, max_members
            )
            if accepted:
                local[socket_id] = member
            elif not local:
                del self._mirror.presence[(app_id, channel)]
            return PresenceJoin(accepted, first, members)

        def here() -> PresenceJoin:
            if member.user_id not in local_users and len(local_users) >= max_members:
                return PresenceJoin(False, False, self._mirror.roster(app_id, channel))
            local[socket_id] = member
            first = member.user_id not in local_users
            return PresenceJoin(True, first, self._mirror.roster(app_id, channel))

        return await self._link.call(shared, here)

    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        local = self._mirror.presence.get((app_id, channel), {})
        local.pop(socket_id, None)
        self._mirror.changed()
        locally_last = all(m.user_id != user_id for m in local.values())
        if not local:
            self._mirror.presence.pop((app_id, channel), None)
        return await self._link.call(
            lambda: self._scripts.presence_leave(app_id, channel, socket_id, user_id),
            lambda: locally_last,
        )

    async def members(self, app_id: str, channel: str) -> list[Member]:
        return await self._link.call(
            lambda: self._cluster.presence_members(app_id, channel),
            lambda: self._mirror.roster(app_id, channel),
        )

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._mirror.users[(app_id, user_id)]
        sockets.add(socket_id)
        self._mirror.changed()
        return await self._link.call(
            lambda: self._scripts.user_online(app_id, user_id, socket_id),
            lambda: len(sockets) == 1,
        )

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._mirror.users.get((app_id, user_id), set())
        sockets.discard(socket_id)
        self._mirror.changed()
        if not sockets:
            self._mirror.users.pop((app_id, user_id), None)
        return await self._link.call(
            lambda: self._scripts.user_offline(app_id, user_id, socket_id),
            lambda: not sockets,
        )

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        if not user_ids:
            return []

        async def shared() -> list[str]:
            async with self._link.redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.scard(self._cluster.app_key(app_id, "user", user_id))
                counts = await pipe.execute()
            return [u for u, n in zip(user_ids, counts, strict=True) if n]

        return await self._link.call(
            shared, lambda: [u for u in user_ids if self._mirror.users.get((app_id, u))]
        )
