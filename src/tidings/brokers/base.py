"""The Broker interface: everything that must be shared between nodes of a cluster.

A node keeps its own sockets in a :class:`~tidings.core.hub.Hub`; the broker carries
publications between nodes and holds the cluster-wide state (subscription counts,
presence members, signed-in users, cache-channel events). ``memory.py`` is the
single-process implementation; a Redis implementation sits beside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.protocol.session import Member

Deliver = Callable[[str, str, bytes, "str | None"], None]
"""``deliver(app_id, channel, message, exclude_socket_id)``: write one Pusher message (JSON,
unframed) to local subscribers."""

Control = Callable[[str, "ControlMessage"], Awaitable[None] | None]
"""``control(app_id, message)``: act on a cluster-wide control message locally."""

Reaped = Callable[[str, str, str, str], None]
"""``reaped(app_id, kind, channel, user_id)``: a dead node's ``member_removed`` or
``channel_vacated``, reported once, on the node that reaped it."""

NodeHandler = Callable[[bytes], Awaitable[None]]
"""``handler(payload)``: a message sent to this node alone (see :meth:`Broker.to_node`)."""

Recovered = Callable[[], Awaitable[None]]
"""``recovered()``: the shared backend is back after an outage (see :meth:`Broker.on_recovered`)."""


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A cluster-wide event every node acts on for its own sockets.

    ``terminate``, ``online`` and ``offline`` concern a user; ``member_added`` and
    ``member_removed`` a presence member of ``channel`` (``data``: the user_info JSON);
    ``recount``: ``channel``'s subscription count changed without a local join or leave
    (a dead node was reaped).
    """

    kind: str
    user_id: str = ""
    channel: str = ""
    data: str = ""


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """The outcome of a presence join."""

    accepted: bool  # False: the channel is full (max_presence_members) and the user is new
    first: bool  # the user's first socket in the channel: announce member_added
    members: list[Member]  # the roster after the join (for subscription_succeeded)


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last event published to a cache channel, as sent to subscribers."""

    message: bytes
    expires_at: float


class Broker(Protocol):
    @property
    def node_id(self) -> str:
        """This node's id, unique in the cluster."""
        ...

    @property
    def degraded(self) -> bool:
        """True while the shared backend is unreachable and only local clients are served."""
        ...

    async def start(self, deliver: Deliver, control: Control) -> None:
        """Begin receiving publications; ``deliver`` is called for every one, in order."""
        ...

    async def close(self) -> None: ...

    async def publish(self, app_id: str, channel: str, message: bytes, exclude: str | None) -> bool:
        """Deliver ``message`` (a Pusher event, JSON: each edge frames it) to every
        subscriber of ``channel`` on every node but ``exclude``.

        Ordering: messages published by one node to one channel arrive in publish order.
        Delivery: at most once; a subscriber that is gone or too slow misses it.
        Failure: this node's subscribers always get it; returns False when the other nodes
        could not be reached (degraded), True when it was handed to every node.
        """
        ...

    async def control(self, app_id: str, message: ControlMessage) -> None:
        """Run ``message`` on every node (the local one included)."""
        ...

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Count a new subscriber of ``channel``; returns the cluster-wide count after it."""
        ...

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Forget a subscriber of ``channel``; returns the cluster-wide count after it."""
        ...

    async def subscription_count(self, app_id: str, channel: str) -> int: ...

    async def channels(self, app_id: str) -> dict[str, int]:
        """Every occupied channel of the app with its subscription count."""
        ...

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have at least one subscriber on any node.

        Cheap by contract: no network in memory mode, one round trip with Redis (the live
        layer asks once per commit). While degraded: this node's own subscribers only.
        """
        ...

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        """Add a socket of ``member``; refused when the user is new and the channel is full."""
        ...

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        """Remove a socket; True when it was the user's last one in the channel."""
        ...

    async def presence_members(self, app_id: str, channel: str) -> list[Member]: ...

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in socket; True when it is the user's first one anywhere."""
        ...

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Forget a signed-in socket; True when it was the user's last one anywhere."""
        ...

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        """Which of ``user_ids`` have at least one signed-in socket."""
        ...

    async def cache_set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        """Keep ``event`` as the channel's last event until ``event.expires_at``."""
        ...

    async def cache_get(self, app_id: str, channel: str, now: float) -> CachedEvent | None: ...

    async def claim(self, key: str, ttl: float) -> str:
        """Claim ``key`` (an HTTP fallback session) for this node unless a live node holds
        it; returns the owner's node id. The claim lapses after ``ttl`` seconds unless
        :meth:`refresh_claims` renews it."""
        ...

    async def refresh_claims(self, keys: list[str], ttl: float) -> None: ...

    def on_reaped(self, handler: Reaped) -> None:
        """Be told, on the reaping node only, what a dead node's departure changed."""
        ...

    def on_recovered(self, handler: Recovered) -> None:
        """Be told when the shared backend is back after an outage and every node has had
        time to write its state back: member events published meanwhile were lost, so the
        handler re-reads what it shows clients. Never called by a broker without outages."""
        ...

    def on_node_message(self, handler: NodeHandler) -> None:
        """Handle messages other nodes send to this one with :meth:`to_node`."""
        ...

    async def to_node(self, node_id: str, payload: bytes) -> None:
        """Send ``payload`` to one node. At most once; order kept per sender and receiver."""
        ...

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        """Add ``events`` to the app's REST events in the current second (cluster-wide);
        returns the total after adding them."""
        ...
