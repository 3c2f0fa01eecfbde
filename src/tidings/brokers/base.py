"""The broker: everything that must be shared between the nodes of a cluster.

A node keeps its own sockets in a :class:`~tidings.core.hub.Hub`; the broker carries
publications between nodes and holds the cluster-wide state. It is a set of small
interfaces, each with its own guarantee, held by one :class:`Broker`:

- ``broker.pubsub`` (:class:`PubSub`): publications to a channel's subscribers;
- ``broker.subscriptions`` (:class:`Subscriptions`): who subscribes to what, counted;
- ``broker.presence`` (:class:`Presence`): presence members and signed-in users;
- ``broker.cache`` (:class:`Cache`): channel state, the last event of each cache channel;
- ``broker.history`` (:class:`~tidings.brokers.history.History`): channel state, the last
  events of each channel with history, with their positions (``history.py``);
- ``broker.claims`` (:class:`Claims`): which node owns an HTTP fallback session;
- ``broker.control`` (:class:`ControlBus`): control messages and node-to-node payloads;
- ``broker.rates`` (:class:`RateCounters`): REST events per second, cluster-wide.

``memory.py`` implements them for one process; ``redis/`` for a cluster sharing a Redis.

Degraded mode (Redis only): while the shared backend is unreachable, every interface
answers from what this node knows (its own sockets) and ``broker.degraded`` is True; no
call raises because of the outage. Each docstring below says what that local answer is.
When the backend returns, the node writes its sockets back and :meth:`Broker.on_recovered`
handlers re-read what they showed clients meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.brokers.control import ControlMessage
from tidings.brokers.history import History, Position
from tidings.protocol.session import Member

Deliver = Callable[[str, str, bytes, "str | None", "Position | None"], None]
"""``deliver(app_id, channel, message, exclude_socket_id, position)``: write one Pusher
message (JSON, unframed) to local subscribers. ``position``: its place in the channel's
history (``broker.history``), or None for a channel without history (or a publication made
while the history could not be reached)."""

Control = Callable[[str, ControlMessage], Awaitable[None] | None]
"""``control(app_id, message)``: act on a cluster-wide control message locally."""

Reaped = Callable[[str, str, str, str], None]
"""``reaped(app_id, kind, channel, user_id)``: a dead node's ``member_removed`` or
``channel_vacated``, reported once, on the node that reaped it."""

NodeHandler = Callable[[bytes], Awaitable[None]]
"""``handler(payload)``: a message sent to this node alone (see :meth:`ControlBus.to_node`)."""

Recovered = Callable[[], Awaitable[None]]
"""``recovered()``: the shared backend is back after an outage (see :meth:`Broker.on_recovered`)."""


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


class PubSub(Protocol):
    """Publications to the subscribers of a channel, on every node."""

    #: True when a publication can reach this node's subscribers only (one process, no
    #: other node listens): the node then skips one that no local subscriber can get.
    local_only: bool

    def publish(
        self, app_id: str, channel: str, message: bytes, exclude: str | None
    ) -> Awaitable[bool]:
        """Deliver ``message`` (a Pusher event, JSON: each edge frames it) to every
        subscriber of ``channel`` on every node but ``exclude``.

        Ordering: messages published by one node to one channel arrive in publish order:
        the order in which the awaitables are awaited (an ``async def``), or already the
        order of the calls (Redis: its publications are queued before this returns, so a
        caller may start several and await them together; see ``redis/pubsub.py``).
        Delivery: at most once; a subscriber that is gone or too slow misses it.
        Failure: this node's subscribers always get it, before the awaitable is done
        (Redis: once Redis answered, see ``redis/pubsub.py``); returns False when the other
        nodes could not be reached (degraded: they miss it), True when it was handed to
        every node.
        """
        ...


class Subscriptions(Protocol):
    """Who subscribes to which channel, counted cluster-wide.

    Every call is atomic in the backend. While degraded, counts are this node's own
    subscribers; the node's subscriptions are written back when the backend returns."""

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Count a new subscriber of ``channel`` (this node starts hearing the channel's
        publications); returns the cluster-wide count after it."""
        ...

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Forget a subscriber of ``channel``; returns the cluster-wide count after it."""
        ...

    async def count(self, app_id: str, channel: str) -> int:
        """``channel``'s subscribers on every node."""
        ...

    async def channels(self, app_id: str) -> dict[str, int]:
        """Every occupied channel of the app with its subscription count."""
        ...

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have at least one subscriber on any node.

        Cheap by contract: no network in memory mode, one round trip with Redis (the live
        layer asks once per commit)."""
        ...


class Presence(Protocol):
    """Presence channel members and signed-in users, cluster-wide.

    A user is a member while any of its sockets, on any node, is in the channel; "first"
    and "last" answers say when to announce it (exactly one node sees each). Atomic per
    call. While degraded: this node's sockets only; when the backend returns, users who
    joined or left meanwhile are announced to the other nodes."""

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        """Add a socket of ``member``; refused when the user is new and the channel is full."""
        ...

    async def leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        """Remove a socket; True when it was the user's last one in the channel."""
        ...

    async def members(self, app_id: str, channel: str) -> list[Member]:
        """The channel's roster, one entry per user."""
        ...

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in socket; True when it is the user's first one anywhere."""
        ...

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Forget a signed-in socket; True when it was the user's last one anywhere."""
        ...

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        """Which of ``user_ids`` have at least one signed-in socket."""
        ...


class Cache(Protocol):
    """Channel state: the last event of each cache channel, shared by every node.

    Best effort: while degraded nothing is stored and nothing is found (a subscriber gets
    ``pusher:cache_miss``, as Pusher sends when nothing was cached)."""

    async def set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        """Keep ``event`` as the channel's last event until ``event.expires_at``."""
        ...

    async def get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        """The channel's last event, unless it expired."""
        ...


class Claims(Protocol):
    """Which node owns a key (an HTTP fallback session), so requests reach that node.

    While degraded every claim is granted to this node (no other node can be asked)."""

    async def claim(self, key: str, ttl: float) -> str:
        """Claim ``key`` for this node unless a live node holds it; returns the owner's
        node id. The claim lapses after ``ttl`` seconds unless :meth:`refresh` renews it."""
        ...

    async def refresh(self, keys: list[str], ttl: float) -> None:
        """Renew this node's claims of ``keys`` for ``ttl`` seconds."""
        ...


class ControlBus(Protocol):
    """Control messages (to every node) and payloads to one node.

    Delivery: at most once, in send order per sender. While degraded, only this node acts
    on a control message and payloads to other nodes are dropped."""

    async def send(self, app_id: str, message: ControlMessage) -> None:
        """Run ``message`` on every node, this one included (before this returns)."""
        ...

    async def to_node(self, node_id: str, payload: bytes) -> None:
        """Send ``payload`` to one node (this one: handled before this returns)."""
        ...

    def on_node_message(self, handler: NodeHandler) -> None:
        """Handle the payloads other nodes send to this one with :meth:`to_node`."""
        ...


class RateCounters(Protocol):
    """Per-second counters shared by every node (Pusher's per-app message quota)."""

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        """Add ``events`` to the app's REST events in the current second; returns the total
        after adding them: this node's count plus the other nodes' as of the last
        :meth:`reconcile` (never a round trip per call; the slack is in docs/redis.md).
        While degraded: this node's count."""
        ...

    async def reconcile(self) -> None:
        """Share this node's counts with the other nodes and learn theirs now (a node does
        it by itself every 100 ms while it counts)."""
        ...


class ConnectionCounts(Protocol):
    """Each app's connections on the other nodes (an app's ``max_connections`` is
    cluster-wide)."""

    async def report(self, counts: Mapping[str, int], interval: float) -> dict[str, int]:
        """Tell the cluster this node's connections per app (every app, zeros too) and get
        the other live nodes' per app, as last reported: a node reports every ``interval``
        seconds, and a report not renewed within three intervals stops counting. While
        degraded, and with the memory broker: no other node's connections ({})."""
        ...


class Broker(Protocol):
    """The interfaces above, with the node's identity and lifecycle."""

    @property
    def pubsub(self) -> PubSub: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def cache(self) -> Cache: ...

    @property
    def history(self) -> History: ...

    @property
    def claims(self) -> Claims: ...

    @property
    def control(self) -> ControlBus: ...

    @property
    def rates(self) -> RateCounters: ...

    @property
    def connections(self) -> ConnectionCounts: ...

    @property
    def node_id(self) -> str:
        """This node's id, unique in the cluster."""
        ...

    @property
    def degraded(self) -> bool:
        """True while the shared backend is unreachable and only local clients are served."""
        ...

    async def start(self, deliver: Deliver, control: Control) -> None:
        """Begin receiving publications and control messages: ``deliver`` is called for
        every publication, in order, ``control`` for every control message."""
        ...

    async def close(self) -> None: ...

    def on_reaped(self, handler: Reaped) -> None:
        """Be told, on the reaping node only, what a dead node's departure changed."""
        ...

    def on_recovered(self, handler: Recovered) -> None:
        """Be told when the shared backend is back after an outage and every node has had
        time to write its state back: member events published meanwhile were lost, so the
        handler re-reads what it shows clients. Never called by a broker without outages."""
        ...
