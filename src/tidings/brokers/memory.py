"""The single-process broker: everything lives in this process's memory.

Delivery is synchronous: ``publish`` writes to local sockets before it returns, so
per-channel order is publish order. Nothing survives a restart.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Sequence

from tidings.brokers.base import (
    CachedEvent,
    Control,
    ControlMessage,
    Deliver,
    NodeHandler,
    PresenceJoin,
    Reaped,
    Recovered,
)
from tidings.core.presence import PresenceChannel
from tidings.protocol.session import Member

CACHE_PRUNE_AT = 10_000  # cache entries before expired ones are swept on the next set


class MemoryBroker:
    node_id = "memory"
    degraded = False

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._subscribers: dict[tuple[str, str], set[str]] = {}
        self._presence: dict[tuple[str, str], PresenceChannel] = {}
        self._users: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._cache: dict[tuple[str, str], CachedEvent] = {}
        self._rate: dict[str, tuple[int, int]] = {}
        self._node_handler: NodeHandler | None = None

    async def start(self, deliver: Deliver, control: Control) -> None:
        self._deliver = deliver
        self._control = control

    async def close(self) -> None:
        self._deliver = None
        self._control = None

    async def publish(self, app_id: str, channel: str, message: bytes, exclude: str | None) -> bool:
        if self._deliver is not None:
            self._deliver(app_id, channel, message, exclude)
        return True

    async def control(self, app_id: str, message: ControlMessage) -> None:
        if self._control is not None:
            result = self._control(app_id, message)
            if inspect.isawaitable(result):
                await result

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        sockets = self._subscribers.setdefault((app_id, channel), set())
        sockets.add(socket_id)
        return len(sockets)

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        key = (app_id, channel)
        sockets = self._subscribers.get(key)
        if sockets is None:
            return 0
        sockets.discard(socket_id)
        if not sockets:
            del self._subscribers[key]
            return 0
        return len(sockets)

    async def subscription_count(self, app_id: str, channel: str) -> int:
        return len(self._subscribers.get((app_id, channel), ()))

    async def channels(self, app_id: str) -> dict[str, int]:
        return {ch: len(s) for (app, ch), s in self._subscribers.items() if app == app_id}

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        # An emptied channel's set is deleted (unsubscribe), so presence means occupied.
        return {channel for channel in channels if (app_id, channel) in self._subscribers}

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        roster = self._presence.setdefault((app_id, channel), PresenceChannel())
        if not roster.has_user(member.user_id) and len(roster) >= max_members:
            if not len(roster):
                del self._presence[(app_id, channel)]
            return PresenceJoin(False, False, roster.members())
        first = roster.join(socket_id, member)
        return PresenceJoin(True, first, roster.members())

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        key = (app_id, channel)
        roster = self._presence.get(key)
        if roster is None:
            return False
        last = roster.leave(socket_id, user_id)
        if not len(roster):
            del self._presence[key]
        return last

    async def presence_members(self, app_id: str, channel: str) -> list[Member]:
        roster = self._presence.get((app_id, channel))
        return roster.members() if roster is not None else []

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users[(app_id, user_id)]
        sockets.add(socket_id)
        return len(sockets) == 1

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        key = (app_id, user_id)
        sockets = self._users.get(key)
        if not sockets or socket_id not in sockets:
            return False
        sockets.discard(socket_id)
        if sockets:
            return False
        del self._users[key]
        return True

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        return [u for u in user_ids if self._users.get((app_id, u))]

    async def cache_set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        if len(self._cache) >= CACHE_PRUNE_AT:
            self._prune(now)
        self._cache[(app_id, channel)] = event

    def _prune(self, now: float) -> None:
        """Drop expired cache entries (bounded memory without a timer)."""
        for key in [k for k, e in self._cache.items() if e.expires_at <= now]:
            del self._cache[key]

    async def cache_get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        key = (app_id, channel)
        event = self._cache.get(key)
        if event is not None and event.expires_at <= now:
            del self._cache[key]
            return None
        return event

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        second = int(now)
        start, count = self._rate.get(app_id, (second, 0))
        if start != second:
            count = 0
        count += events
        self._rate[app_id] = (second, count)
        return count

    # One process owns every session; there is no other node to talk to.

    async def claim(self, key: str, ttl: float) -> str:
        return self.node_id

    async def refresh_claims(self, keys: list[str], ttl: float) -> None:
        return None

    def on_reaped(self, handler: Reaped) -> None:
        return None  # one process: nothing is ever reaped

    def on_recovered(self, handler: Recovered) -> None:
        return None  # nothing shared, so no outage to recover from

    def on_node_message(self, handler: NodeHandler) -> None:
        self._node_handler = handler

    async def to_node(self, node_id: str, payload: bytes) -> None:
        if node_id == self.node_id and self._node_handler is not None:
            await self._node_handler(payload)
