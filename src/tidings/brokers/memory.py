"""The single-process broker: every interface of ``base.py`` in this process's memory.

Delivery is synchronous: ``publish`` and ``send`` act on local sockets before they return,
so per-channel order is publish order. Nothing survives a restart, and there is no backend
to lose: the broker is never degraded.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from tidings.brokers.base import (
    CachedEvent,
    Control,
    Deliver,
    NodeHandler,
    PresenceJoin,
    Reaped,
    Recovered,
)
from tidings.brokers.control import ControlMessage
from tidings.brokers.memory_history import MemoryHistory
from tidings.core.presence import PresenceChannel
from tidings.protocol.session import Member

NODE_ID = "memory"
CACHE_PRUNE_AT = 10_000  # cache entries before expired ones are swept on the next set


class MemoryPubSub:
    local_only = True  # one process: what is published here is delivered here alone

    def __init__(self) -> None:
        self.deliver: Deliver | None = None  # set while the broker runs

    async def publish(self, app_id: str, channel: str, message: bytes, exclude: str | None) -> bool:
        if self.deliver is not None:
            self.deliver(app_id, channel, message, exclude, None)
        return True


class MemorySubscriptions:
    def __init__(self) -> None:
        self._subscribers: dict[tuple[str, str], set[str]] = {}

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

    async def count(self, app_id: str, channel: str) -> int:
        return len(self._subscribers.get((app_id, channel), ()))

    async def channels(self, app_id: str) -> dict[str, int]:
        return {ch: len(s) for (app, ch), s in self._subscribers.items() if app == app_id}

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        # An emptied channel's set is deleted (unsubscribe), so presence means occupied.
        return {channel for channel in channels if (app_id, channel) in self._subscribers}


class MemoryPresence:
    def __init__(self) -> None:
        self._rosters: dict[tuple[str, str], PresenceChannel] = {}
        self._users: dict[tuple[str, str], set[str]] = defaultdict(set)

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        roster = self._rosters.setdefault((app_id, channel), PresenceChannel())
        if not roster.has_user(member.user_id) and len(roster) >= max_members:
            if not len(roster):
                del self._rosters[(app_id, channel)]
            return PresenceJoin(False, False, roster.members())
        first = roster.join(socket_id, member)
        return PresenceJoin(True, first, roster.members())

    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        key = (app_id, channel)
        roster = self._rosters.get(key)
        if roster is None:
            return False
        last = roster.leave(socket_id, user_id)
        if not len(roster):
            del self._rosters[key]
        return last

    async def members(self, app_id: str, channel: str) -> list[Member]:
        roster = self._rosters.get((app_id, channel))
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


class MemoryCache:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str], CachedEvent] = {}

    async def set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        if len(self._events) >= CACHE_PRUNE_AT:
            self._prune(now)
        self._events[(app_id, channel)] = event

    def _prune(self, now: float) -> None:
        """Drop expired entries (bounded memory without a timer)."""
        for key in [k for k, e in self._events.items() if e.expires_at <= now]:
            del self._events[key]

    async def get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        key = (app_id, channel)
        event = self._events.get(key)
        if event is not None and event.expires_at <= now:
            del self._events[key]
            return None
        return event


class LocalClaims:
    """One process owns every session: there is no other node to claim them."""

    async def claim(self, key: str, ttl: float) -> str:
        return NODE_ID

    async def refresh(self, keys: list[str], ttl: float) -> None:
        return None


class MemoryControlBus:
    def __init__(self) -> None:
        self.control: Control | None = None  # set while the broker runs
        self._node_handler: NodeHandler | None = None

    async def send(self, app_id: str, message: ControlMessage) -> None:
        if self.control is not None:
            result = self.control(app_id, message)
            if inspect.isawaitable(result):
                await result

    async def to_node(self, node_id: str, payload: bytes) -> None:
        if node_id == NODE_ID and self._node_handler is not None:
            await self._node_handler(payload)

    def on_node_message(self, handler: NodeHandler) -> None:
        self._node_handler = handler


class MemoryRates:
    def __init__(self) -> None:
        self._seconds: dict[str, tuple[int, int]] = {}  # app id -> (second, events in it)

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        second = int(now)
        start, count = self._seconds.get(app_id, (second, 0))
        if start != second:
            count = 0
        count += events
        self._seconds[app_id] = (second, count)
        return count

    async def reconcile(self) -> None:
        """One process: nothing to share."""


class AloneConnectionCounts:
    """One node: no connections elsewhere."""

    async def report(self, counts: Mapping[str, int], interval: float) -> dict[str, int]:
        return {}


class MemoryBroker:
    node_id = NODE_ID
    degraded = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: what history expiry reads (tests move it instead of waiting)."""
        self.pubsub = MemoryPubSub()
        self.subscriptions = MemorySubscriptions()
        self.presence = MemoryPresence()
        self.cache = MemoryCache()
        self.history = MemoryHistory(self.pubsub, clock)
        self.claims = LocalClaims()
        self.control = MemoryControlBus()
        self.rates = MemoryRates()
        self.connections = AloneConnectionCounts()

    async def start(self, deliver: Deliver, control: Control) -> None:
        self.pubsub.deliver = deliver
        self.control.control = control

    async def close(self) -> None:
        self.pubsub.deliver = None
        self.control.control = None

    def on_reaped(self, handler: Reaped) -> None:
        return None  # one process: nothing is ever reaped

    def on_recovered(self, handler: Recovered) -> None:
        return None  # nothing shared, so no outage to recover from
