"""The Node: the one object that connections, the REST API and (later) user code call.

It owns the apps, this process's hubs and the broker, and carries out what a
:class:`~tidings.protocol.session.Session` decides. Transports (WebSocket, and later the
HTTP fallbacks) only feed it frames and give it something to write Pusher messages to:
the node and the broker carry JSON messages, and each edge frames them its own way.

What it decides without waiting is decided in the core, and the node only awaits the broker
and writes to connections: who may connect and who is signed in (``core/registry.py``), who
hears of watched users (``core/watchlist.py``), which sockets hear of presence members
(``core/views.py``), and which webhooks and subscription counts a change makes
(``core/transitions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, assert_never

import orjson

from tidings.brokers.base import Broker, CachedEvent, PresenceJoin
from tidings.brokers.control import (
    Console,
    ControlMessage,
    MemberAdded,
    MemberRemoved,
    Recount,
    Terminate,
    UserOffline,
    UserOnline,
)
from tidings.brokers.history import HistoryPage, Position
from tidings.brokers.node_messages import NodeMessages
from tidings.console.tap import Tap
from tidings.core import transitions
from tidings.core.apps import App, AppRegistry
from tidings.core.counters import AppCounters as AppCounters
from tidings.core.hub import Coalescer, Hub, Writer, write_to_many
from tidings.core.live_hold import is_live
from tidings.core.presence import MemberEvent, roster
from tidings.core.publication import Publication
from tidings.core.rate import TokenBucket
from tidings.core.recovery import Settled
from tidings.core.registry import AppConnections, Registry, handshake_refusal
from tidings.core.transitions import CacheMisses, CountThrottle, DirtyCounts, Held, Occurred
from tidings.core.views import PresenceViews
from tidings.core.watchlist import Watchlist
from tidings.live_subscriptions import LiveSubscriptions, PendingSnapshot, SnapshotProvider
from tidings.protocol import messages
from tidings.protocol.channels import (
    CACHE_PREFIXES,
    USER_CHANNEL_PREFIX,
    ChannelKind,
    ChannelType,
    channel_type,
)
from tidings.protocol.errors import MESSAGES, ErrorCode
from tidings.protocol.recovery import succeeded_data
from tidings.protocol.rest import Trigger
from tidings.protocol.session import (
    Action,
    Broadcast,
    Close,
    Join,
    Leave,
    Member,
    Send,
    Session,
    SignIn,
    User,
    Watch,
)
from tidings.recovery import AppRecovery
from tidings.tasks import report_failure, spawn

log = logging.getLogger("tidings.node")
# What clients and the REST API do, line by line (`tidings serve --debug`, or
# log_level = "debug"): the text counterpart of Pusher's debug console.
trace = logging.getLogger("tidings.debug")


class Connection(Protocol):
    """A client connection as the node sees it; the transport edge implements it."""

    @property
    def socket_id(self) -> str: ...

    @property
    def session(self) -> Session: ...

    @property
    def app(self) -> App: ...

    def send(self, message: bytes) -> None:
        """Write one Pusher message (JSON), framed by the edge, without blocking (slow
        consumers close themselves)."""
        ...

    def publish(self, publication: Publication) -> None:
        """Write a publication in this edge's encoding (the hub's ``Subscriber``)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code, after anything already sent."""
        ...


@dataclass(frozen=True, slots=True)
class NodeSettings:
    activity_timeout: float = 120.0
    pong_timeout: float = 30.0
    max_connections: int = 100_000
    max_connection_rate: int = 10_000  # new connections per second (0: no limit)
    # Seconds between two checks that no channel with history lost its last publication
    # on the way to this node (tidings/recovery.py, AppRecovery.check).
    history_check_interval: float = 5.0


class _CallSoon:
    """``call_soon`` on the running loop, found once per loop and thread:
    ``asyncio.get_running_loop()`` makes a ``getpid`` system call each time, and the
    Coalescer schedules once per loop tick that publishes."""

    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def __call__(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        # A thread runs one loop at a time: on the thread the loop ran on, while it runs,
        # it is the running loop.
        if loop is None or threading.get_ident() != self._thread or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
        loop.call_soon(callback)


# How often a node tells the others its connections per app, and learns theirs: an app's
# max_connections may be passed by what the other nodes admitted within this (the slack).
CONNECTION_REPORT_INTERVAL = 1.0


@contextlib.contextmanager
def _isolated(what: str, *args: object) -> Iterator[None]:
    """One item of a loop over connections, channels or messages: if it fails, the failure
    is logged once (``what % args``, with the traceback) and the loop goes on.

    One bad socket must never stop a broadcast, a timer sweep or a detach; cancellation
    still goes through (it is not an ``Exception``).
    """
    try:
        yield
    except Exception:
        log.exception(what, *args)


class WebhookEvents(Protocol):
    """Where the node sends webhook events (``server/webhooks.py``, ``hooks.py``)."""

    def active(self, app: App) -> bool:
        """Whether any event of ``app`` goes anywhere (the node builds none otherwise)."""
        ...

    def wants(self, app: App, name: str) -> bool: ...

    def emit(self, app: App, event: dict[str, Any]) -> None: ...

    def defer(self, app: App, key: tuple[str, ...], event: dict[str, Any]) -> None: ...

    def occur(self, app: App, undoes: tuple[str, ...], event: dict[str, Any]) -> None:
        """Announce ``event`` unless it undoes the event held under ``undoes``: then both
        are dropped (a quick reconnect makes no vacated/occupied pair)."""
        ...


class BackendRateLimited(Exception):
    """An app published more than max_backend_events_per_second (HTTP 429)."""


class ClusterUnavailable(Exception):
    """The broker cannot reach the other nodes (a Redis outage): a REST publish would reach
    this node's subscribers only, so it is refused (HTTP 503) for the publisher to retry."""


# Sent to a socket whose client event reached only this node's subscribers (code null:
# pusher-js emits an ``error`` event and keeps the connection).
UNDELIVERED_CLIENT_EVENT = (
    "Client event not delivered to other nodes: the cluster backend is unreachable"
)


@dataclass(slots=True)
class _AppState:
    """One app on this node: its hub and counters, and the core's bookkeeping of it."""

    app: App
    hub: Hub
    connections: AppConnections[Connection]
    counters: AppCounters = field(default_factory=AppCounters)
    watchlist: Watchlist = field(default_factory=Watchlist)
    views: PresenceViews = field(default_factory=PresenceViews)
    cache_misses: CacheMisses = field(default_factory=CacheMisses)
    count_hooks: CountThrottle = field(default_factory=CountThrottle)
    # The console's recorder while someone watches this app, else None: every hook on the
    # paths below is this one check (console/tap.py).
    tap: Tap | None = None
    # History on this node: positioned deliveries, gap fills, catch-ups (tidings/recovery.py).
    recovery: AppRecovery = field(init=False)


class Node:
    def __init__(
        self,
        apps: AppRegistry,
        broker: Broker,
        settings: NodeSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        write: Writer = write_to_many,
    ) -> None:
        self.apps = apps
        self.broker = broker
        self.settings = settings or NodeSettings()
        self.clock = clock  # timers and expiry
        self.wall_clock = wall_clock  # per-second rate windows shared by every node
        # Publications are written at the end of the loop tick, several at once; connections
        # flush it before any direct write, hubs before any subscription change (Coalescer).
        self.outgoing = Coalescer(_CallSoon())
        self._registry: Registry[Connection] = Registry(
            [app.id for app in apps], self.settings.max_connections
        )
        self._states = {
            app.id: _AppState(app, Hub(write, self.outgoing.flush), self._registry.of(app.id))
            for app in apps
        }
        for state in self._states.values():
            state.recovery = AppRecovery(
                state.app,
                state.hub,
                state.counters,
                self.outgoing,
                lambda: self.broker.history,
                self._spawn,
                state.connections.get,
            )
        self._policies = {
            app.id: app.session_policy(self.settings.activity_timeout, self.settings.pong_timeout)
            for app in apps
        }
        self._connection_rate = TokenBucket(self.settings.max_connection_rate, clock())
        # Refusals of connections that name no app (unknown key, bad path).
        self.unknown_app_counters = AppCounters()
        self._dirty_counts = DirtyCounts()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._history_checker: asyncio.Task[None] | None = None
        self.draining = False
        self.webhooks: WebhookEvents | None = None
        # Embedded apps' ``before`` hooks: the data to publish for a client event, or None.
        self.client_event_filter: Callable[[App, Broadcast, str], Awaitable[str | None]] | None
        self.client_event_filter = None
        # The broker's node-to-node messages, shared by the HTTP fallback and the console.
        self.node_messages = NodeMessages(broker.control)
        # The console's handler of its control messages (console/watch.py), when enabled.
        self.console_control: Callable[[str, Console], None] | None = None
        # Where snapshots of live channels come from (embedded: the live layer; `tidings
        # serve`: the apps' live_snapshot_url), and the ids of the apps it serves (None:
        # every app). Without one, private-live.* channels are plain private channels.
        self.live_snapshots: SnapshotProvider | None = None
        self.live_apps: frozenset[str] | None = None
        # Live subscriptions whose deliveries are held while their snapshot is fetched.
        self.live_subscriptions: LiveSubscriptions[Connection] = LiveSubscriptions(
            self.outgoing.flush, self._spawn, self._snapshot_failed
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.broker.on_reaped(self.on_reaped)
        self.broker.on_recovered(self.recheck_presence)
        await self.broker.start(self._deliver, self._control)
        self._ticker = spawn(self._tick_forever(), "node timers")
        self._reporter = spawn(self._report_connections_forever(), "connection counts")
        if any(app.history for app in self.apps):
            self._history_checker = spawn(self._check_history_forever(), "history checks")

    async def close(self) -> None:
        for task in (self._ticker, self._reporter, self._history_checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._tasks):
            task.cancel()
        # Gone: the other nodes stop counting this node's connections at once.
        await self.broker.connections.report({app.id: 0 for app in self.apps}, 1.0)
        await self.broker.close()

    @property
    def connection_count(self) -> int:
        return self._registry.count

    def counters(self, app: App) -> AppCounters:
        return self._states[app.id].counters

    def counters_for(self, app: App | None) -> AppCounters:
        """``app``'s counters, or those of connections that named no known app."""
        return self.unknown_app_counters if app is None else self._states[app.id].counters

    def app_gauges(self, app: App) -> tuple[int, int, int]:
        """This node's connections, occupied channels and subscriptions of ``app``."""
        state = self._states[app.id]
        channels = [c for c in state.hub.channels() if not c.startswith(USER_CHANNEL_PREFIX)]
        return len(state.connections), len(channels), sum(state.hub.count(c) for c in channels)

    def connections(self) -> list[Connection]:
        return self._registry.all()

    def tap(self, app_id: str) -> Tap | None:
        """The console's recorder of ``app_id``, while someone watches it."""
        state = self._states.get(app_id)
        return state.tap if state is not None else None

    def set_tap(self, app_id: str, tap: Tap | None) -> None:
        self._states[app_id].tap = tap

    # -- connections -------------------------------------------------------------------------

    def refusal(self, app: App) -> ErrorCode | None:
        """Why a new connection to ``app`` is refused, or None."""
        return self._registry.refusal(app, self.draining)

    def take_connection_slot(self, app: App | None, count_refusal: bool = True) -> bool:
        """Whether a new connection may start now (``max_connection_rate``, per node).

        Every attempt takes a token, whatever its app: the limit protects this node from
        a reconnect storm. A refusal is counted and answered 503 before any upgrade
        (``count_refusal=False``: the caller hands the attempt to an edge that asks again).
        """
        if self._connection_rate.take(self.clock()):
            return True
        if count_refusal:
            self.counters_for(app).connection_rate_refusals += 1
        return False

    def admission(
        self, app: App | None, protocol: str | None, origin: str | None
    ) -> tuple[ErrorCode, str] | None:
        """Why a new connection is refused (code and message), whatever its transport."""
        refused = handshake_refusal(app, protocol, origin)
        if refused is not None or app is None:
            return refused
        code = self.refusal(app)
        return (code, MESSAGES[code]) if code is not None else None

    def new_session(self, app: App, activity_timeout: float | None = None) -> Session:
        """A session for a new connection to ``app``; ``activity_timeout``: this one's own
        (the SSE edge's ping interval), else the server's."""
        socket_id = self._registry.free_socket_id(app.id, secrets.randbelow)
        policy = self._policies[app.id]
        if activity_timeout is not None:
            policy = dataclasses.replace(policy, activity_timeout=activity_timeout)
        return Session(socket_id, policy, self.clock())

    def attach(self, connection: Connection, transport: str = "ws") -> None:
        """Register a connection and send it ``pusher:connection_established``.

        ``transport``: how it is connected, for the console (``ws``, ``asgi-ws``, ``sse``,
        ``xhr_streaming``, ``xhr_polling``)."""
        state = self._states[connection.app.id]
        self._registry.add(connection.app.id, connection.socket_id, connection)
        state.counters.connections_opened += 1
        connection.send(connection.session.greeting())
        if state.tap is not None:
            state.tap.connection(connection.socket_id, transport)
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(
                "connection %s opened (app %s, %s)",
                connection.socket_id,
                connection.app.id,
                type(connection).__name__,
            )

    async def receive(self, connection: Connection, text: str | bytes) -> None:
        """Handle one frame from ``connection``, in arrival order."""
        counters = self._states[connection.app.id].counters
        counters.messages_in += 1
        # str.isascii() is O(1) in CPython: encode only to count non-ASCII text exactly.
        if isinstance(text, bytes) or text.isascii():
            counters.bytes_in += len(text)
        else:
            counters.bytes_in += len(text.encode())
        actions = connection.session.receive(text, self.clock())
        if actions:
            await self._run(connection, actions)

    async def detach(self, connection: Connection, client_code: int | None = None) -> None:
        """Forget a closed connection: leave its channels, sign it out.

        ``client_code``: the close code the client sent, when it closed the connection
        (for the console; a connection the server closed knows its own ``closed_with``).
        Never raises. Each channel left and the sign-out is a step of its own: a step that
        fails is logged and the others still run, so a closed connection never stays behind
        as a member, subscriber or online user (a ghost).
        """
        socket_id = connection.socket_id
        if self._registry.remove(connection.app.id, socket_id) is None:
            return
        session = connection.session
        session.closed = True
        tap = self._states[connection.app.id].tap
        if tap is not None:
            closed_with: tuple[int, str] | None = getattr(connection, "closed_with", None)
            if closed_with is not None:
                tap.disconnection(socket_id, "server", closed_with[0], closed_with[1])
            else:
                tap.disconnection(socket_id, "client", client_code, "")
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(
                "connection %s closed (app %s), leaving %d channel(s)",
                socket_id,
                connection.app.id,
                len(session.subscriptions),
            )
        for channel, member in list(session.subscriptions.items()):
            with _isolated("leaving %s for closed connection %s failed", channel, socket_id):
                await self._leave(connection, channel, channel_type(channel), member)
        session.subscriptions.clear()
        if session.user is not None:
            with _isolated("signing out closed connection %s failed", socket_id):
                await self._sign_out(connection, session.user)

    # -- actions -----------------------------------------------------------------------------

    async def _run(self, connection: Connection, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send() | Close():
                    self._answer(connection, action)
                case Join():
                    await self._join(connection, action)
                case Leave(channel=channel, type=ctype, member=member):
                    await self._leave(connection, channel, ctype, member)
                case Broadcast():
                    await self._client_event(connection, action)
                case SignIn(user=user):
                    await self._sign_in(connection, user)
                case Watch(user=user):
                    await self._watch(connection, user)

    def _answer(self, connection: Connection, action: Send | Close) -> None:
        """Carry out a Session's Send or Close, counting every error and close code sent."""
        counters = self._states[connection.app.id].counters
        if isinstance(action, Send):
            if action.message.startswith(messages.ERROR_PREFIX):
                counters.count_error(messages.error_code(action.message))
                self._trace_refusal(connection, action.message)
            elif action.message.startswith(messages.SUBSCRIPTION_ERROR_PREFIX):
                self._trace_refusal(connection, action.message)
            connection.send(action.message)
        else:
            counters.count_close(action.code)
            trace.debug("closing %s with %d (%s)", connection.socket_id, action.code, action.reason)
            connection.close(action.code, action.reason)

    def _trace_refusal(self, connection: Connection, message: bytes) -> None:
        # Errors and refused subscriptions carry their reason (a bad signature names the
        # string it expected to be signed).
        tap = self._states[connection.app.id].tap
        if tap is not None:
            tap.refused_message(connection.socket_id, message)
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("to %s: %s", connection.socket_id, message.decode(errors="replace"))

    async def _join(self, connection: Connection, join: Join) -> None:
        app = connection.app
        state = self._states[app.id]
        channel, member, socket_id = join.channel, join.member, connection.socket_id
        again = state.hub.contains(channel, socket_id)
        data = "{}"
        joined: PresenceJoin | None = None
        if join.type.kind is ChannelKind.USER:
            again = True  # the hub already delivers this user's channel since sign-in
        elif join.type.is_presence and member is not None:
            if again:
                members = await self.broker.presence.members(app.id, channel)
            else:
                # Member events that arrive while the roster is read are held by the view.
                view = state.views.open(channel, socket_id)
                joined = await self.broker.presence.join(
                    app.id, channel, socket_id, member, app.max_presence_members
                )
                if not joined.accepted:
                    state.views.drop(channel, socket_id)
                    connection.session.forget(channel)
                    limit = app.max_presence_members
                    trace.debug("%s refused %s: presence channel full", socket_id, channel)
                    refusal = messages.subscription_error(
                        channel, "LimitReached", f"presence channel full ({limit} members)", 4100
                    )
                    if state.tap is not None:
                        state.tap.refused_message(socket_id, refusal)
                    connection.send(refusal)
                    return
                members = joined.members
            data = messages.dumps(roster(members))
        count = 0
        if not again:
            count = await self.broker.subscriptions.subscribe(app.id, channel, socket_id)
        cached: CachedEvent | None = None
        if join.type.cache:
            cached = await self.broker.cache.get(app.id, channel, self.clock())
        if connection.session.closed or socket_id not in state.connections:
            return  # the connection went away while we waited on the broker
        held: PendingSnapshot[Connection] | None = None
        settled: Settled | None = None
        provider = self._snapshot_provider(app, channel)
        rule = None if again or provider is not None else state.recovery.rule(channel, join.opt_in)
        if provider is not None:
            held = self.live_subscriptions.hold(state.hub, connection, channel, provider)
        elif rule is not None and join.opt_in is not None:
            # Opted in on a channel with history: its position, and what it missed.
            settled = await state.recovery.catch_up(connection, channel, join.opt_in, rule)
            if settled is None:
                return  # left, closed or overflowed while the history was read
            if settled.positioned:
                data = succeeded_data(
                    orjson.loads(data), settled.epoch, settled.offset, settled.recovered
                )
        elif not again:
            state.hub.add(channel, connection)
        connection.send(messages.event("pusher_internal:subscription_succeeded", channel, data))
        if settled is not None and settled.messages:
            # The replay, then what was published while the history was read: written
            # before anything published from now on (same tick, no flush in between).
            connection.publish(Publication(settled.messages))
            state.counters.deliveries += len(settled.messages)
        if held is not None:
            self.live_subscriptions.fetch(held)
        if state.tap is not None:
            state.tap.subscribed(socket_id, channel, member.user_id if member else None)
        if trace.isEnabledFor(logging.DEBUG):
            who = f" as user {member.user_id}" if member is not None else ""
            trace.debug("%s subscribed to %s%s", socket_id, channel, who)
        if joined is not None:
            for event in view.snapshot([m.user_id for m in joined.members]):
                connection.send(_member_message(channel, event))
        if join.type.cache:
            if cached is not None:
                connection.send(cached.message)
            else:
                connection.send(messages.event("pusher:cache_miss", channel))
        # The first subscriber anywhere (the broker counts cluster-wide): unless this undoes
        # a vacancy still held back, the channel became occupied.
        self._transition(app, transitions.subscribed(channel, count))
        if join.type.cache and cached is None:
            self._cache_missed(app, channel)
        if joined is not None and joined.first and member is not None:
            self._transition(app, transitions.member_joined(channel, member.user_id))
            info = messages.dumps(member.user_info)
            added = MemberAdded(channel, member.user_id, info)
            await self.broker.control.send(app.id, added)
        if not again:
            self._count_changed(app, channel, join.type)

    async def _leave(
        self, connection: Connection, channel: str, ctype: ChannelType, member: Member | None
    ) -> None:
        if ctype.kind is ChannelKind.USER:
            return  # delivery to a signed-in user lasts as long as the sign-in
        app = connection.app
        socket_id = connection.socket_id
        state = self._states[app.id]
        state.hub.remove(channel, socket_id)
        state.recovery.left(socket_id, channel)
        self.live_subscriptions.drop(app, socket_id, channel)  # its snapshot is for nobody now
        if state.tap is not None:
            state.tap.unsubscribed(socket_id, channel)
        presence_member = member if ctype.is_presence else None
        if presence_member is not None:
            state.views.drop(channel, socket_id)
        # Each step below runs whatever the one before it did: a subscription left behind
        # must not keep the member too, nor a failed fan-out swallow a webhook.
        left: int | None = None
        with _isolated("unsubscribing %s from %s failed", socket_id, channel):
            left = await self.broker.subscriptions.unsubscribe(app.id, channel, socket_id)
        if presence_member is not None:
            with _isolated("%s leaving presence channel %s failed", socket_id, channel):
                await self._member_left(app, channel, socket_id, presence_member)
        self._hold(app, transitions.unsubscribed(channel, left))
        self._count_changed(app, channel, ctype)

    async def _member_left(self, app: App, channel: str, socket_id: str, member: Member) -> None:
        """Pusher: member_removed when a user's last connection leaves a presence channel."""
        if not await self.broker.presence.leave(app.id, channel, socket_id, member.user_id):
            return
        # Held before the members are told: the webhook is owed whatever the fan-out does.
        self._hold(app, transitions.member_left(channel, member.user_id))
        removed = MemberRemoved(channel, member.user_id)
        await self.broker.control.send(app.id, removed)

    async def _client_event(self, connection: Connection, event: Broadcast) -> None:
        if self.client_event_filter is not None:
            data = await self.client_event_filter(connection.app, event, connection.socket_id)
            if data is None:
                return
            event = dataclasses.replace(event, data=data)
        state = self._states[connection.app.id]
        state.counters.publications += 1
        if state.tap is not None:
            state.tap.client_event(
                event.channel, event.event, event.data, connection.socket_id, event.user_id
            )
        trace.debug(
            "client event %s on %s from %s", event.event, event.channel, connection.socket_id
        )
        # Pusher: client events are never echoed to the sender.
        message = messages.event(event.event, event.channel, event.data, event.user_id)
        if not await self._publish(
            connection.app, event.channel, event.event, message, connection.socket_id
        ):
            self._undelivered(connection)
        hook: dict[str, Any] = {
            "name": "client_event",
            "channel": event.channel,
            "event": event.event,
            "data": event.data,
            "socket_id": connection.socket_id,
        }
        if event.user_id is not None:
            hook["user_id"] = event.user_id
        self._webhook(connection.app, hook)

    def _undelivered(self, connection: Connection) -> None:
        """A client event reached this node's subscribers only: tell the sender, who may
        send it again (at most once delivery, so nothing is retried for it)."""
        self._answer(connection, Send(messages.error(UNDELIVERED_CLIENT_EVENT, None)))

    async def _sign_in(self, connection: Connection, user: User) -> None:
        app = connection.app
        state = self._states[app.id]
        socket_id = connection.socket_id
        state.connections.sign_in(user.id, socket_id)
        state.hub.add(user.channel, connection)
        await self.broker.subscriptions.subscribe(app.id, user.channel, socket_id)
        if await self.broker.presence.user_online(app.id, user.id, socket_id):
            await self.broker.control.send(app.id, UserOnline(user.id))

    async def _watch(self, connection: Connection, user: User) -> None:
        if connection.session.closed:
            return  # closed while signing in: detach has already unwatched
        app_id = connection.app.id
        state = self._states[app_id]
        socket_id = connection.socket_id
        state.watchlist.watch(socket_id, user.watchlist)
        if user.watchlist:
            online = await self.broker.presence.users_online(app_id, list(user.watchlist))
            # Events that arrived while we asked are newer than this snapshot (Watchlist).
            told = state.watchlist.snapshot(socket_id, user.watchlist, set(online))
            if told:
                connection.send(_watchlist_message("online", told))

    async def _sign_out(self, connection: Connection, user: User) -> None:
        app = connection.app
        state = self._states[app.id]
        socket_id = connection.socket_id
        state.connections.sign_out(user.id, socket_id)
        state.watchlist.unwatch(socket_id, user.watchlist)
        state.hub.remove(user.channel, socket_id)
        # Still signed out (and announced offline) if the user channel's unsubscribe fails.
        with _isolated("unsubscribing %s from %s failed", socket_id, user.channel):
            await self.broker.subscriptions.unsubscribe(app.id, user.channel, socket_id)
        if await self.broker.presence.user_offline(app.id, user.id, socket_id):
            await self.broker.control.send(app.id, UserOffline(user.id))

    # -- live channels: the snapshot and the hold (live_subscriptions.py) --------------------

    def _snapshot_provider(self, app: App, channel: str) -> SnapshotProvider | None:
        """Where the snapshot of ``channel`` comes from, or None: a plain private channel."""
        if not is_live(channel) or (self.live_apps is not None and app.id not in self.live_apps):
            return None
        return self.live_snapshots

    async def _snapshot_failed(self, connection: Connection, channel: str, refusal: bytes) -> None:
        """Unsubscribe the socket whose snapshot failed and tell it why."""
        # Forgotten first: a detach from now on has nothing to leave, and the client may
        # subscribe again once it has the error (sent after the broker forgot it).
        connection.session.forget(channel)
        await self._leave(connection, channel, channel_type(channel), None)
        tap = self._states[connection.app.id].tap
        if tap is not None:
            tap.refused_message(connection.socket_id, refusal)
        connection.send(refusal)

    # -- webhooks ----------------------------------------------------------------------------

    def _webhook(self, app: App, event: dict[str, Any]) -> None:
        if self.webhooks is not None and self.webhooks.active(app):
            self.webhooks.emit(app, event)

    def _hold(self, app: App, held: Held | None) -> None:
        """channel_vacated / member_removed wait, in case the client comes straight back."""
        if held is not None and self.webhooks is not None and self.webhooks.active(app):
            self.webhooks.defer(app, held.key, held.event)

    def _transition(self, app: App, occurred: Occurred | None) -> None:
        """channel_occupied / member_added, unless it cancels a held vacancy or removal."""
        if occurred is None or self.webhooks is None or not self.webhooks.active(app):
            return
        self.webhooks.occur(app, occurred.undoes, occurred.event)

    def _cache_missed(self, app: App, channel: str) -> None:
        """Pusher: cache_miss is sent once per empty channel, not once per subscriber."""
        if self.webhooks is None or not self.webhooks.active(app):
            return
        if self._states[app.id].cache_misses.announce(channel, self.clock(), app.cache_ttl):
            self._webhook(app, {"name": "cache_miss", "channel": channel})

    def on_reaped(self, app_id: str, kind: str, channel: str, user_id: str) -> None:
        """A dead node's sockets were removed cluster-wide (called on the reaping node only)."""
        app = self.apps.by_id(app_id)
        event = transitions.reaped(kind, channel, user_id)
        if app is not None and event is not None:
            self._webhook(app, event)

    # -- broker callbacks (every node) -------------------------------------------------------

    def _deliver(
        self,
        app_id: str,
        channel: str,
        message: bytes,
        exclude: str | None,
        position: Position | None = None,
    ) -> None:
        """A publication for this node's subscribers; ``position``: its place in the
        channel's history (None: the channel keeps none), for recovery to act on."""
        state = self._states.get(app_id)
        if state is None:
            return
        if position is None:
            self.outgoing.add(state.hub, channel, message, exclude, state.counters)
        else:  # a channel with history: in offset order, holes filled first
            state.recovery.deliver(channel, message, exclude, position.offset, position.epoch)

    def _control(self, app_id: str, message: ControlMessage) -> None:
        state = self._states.get(app_id)
        # Every loop below isolates its recipients: a socket that cannot be written to (its
        # peer vanished a moment ago) never keeps the event from the others, nor raises into
        # whoever sent the message (a detach announcing member_removed).
        match message:
            case Console():
                if self.console_control is not None:
                    self.console_control(app_id, message)
            case _ if state is None:
                pass  # an app this node does not serve
            case Terminate(user_id=user_id):
                for connection in state.connections.of_user(user_id):
                    with _isolated("terminating %s failed", connection.socket_id):
                        actions = connection.session.close(
                            ErrorCode.UNAUTHORIZED, "Connection terminated by the app"
                        )
                        for action in actions:
                            if isinstance(action, Send | Close):
                                self._answer(connection, action)
            case MemberAdded(channel=channel, user_id=user_id, user_info=user_info):
                info = orjson.loads(user_info) if user_info else None
                self._member_event(state, channel, MemberEvent(True, user_id, info))
            case MemberRemoved(channel=channel, user_id=user_id):
                self._member_event(state, channel, MemberEvent(False, user_id, None))
            case Recount(channel=channel):
                if state.hub.count(channel):
                    self._count_changed(state.app, channel, channel_type(channel), local_only=True)
            case UserOnline(user_id=user_id):
                self._watched(state, user_id, "online")
            case UserOffline(user_id=user_id):
                self._watched(state, user_id, "offline")
            case _:
                assert_never(message)

    def _member_event(self, state: _AppState, channel: str, event: MemberEvent) -> None:
        kind = "member_added" if event.added else "member_removed"
        member: bytes | None = None
        for socket_id in state.views.offer(channel, event, state.connections):
            member = member or _member_message(channel, event)
            self._send_isolated(state, socket_id, member, kind)

    def _watched(self, state: _AppState, user_id: str, kind: Literal["online", "offline"]) -> None:
        told = state.watchlist.announce(user_id, kind == "online", state.connections)
        watched: bytes | None = None
        for socket_id in told:
            watched = watched or _watchlist_message(kind, [user_id])
            self._send_isolated(state, socket_id, watched, f"watchlist {kind}")

    def _send_isolated(self, state: _AppState, socket_id: str, message: bytes, what: str) -> None:
        """One recipient of a control message's fan-out; its failure is logged, no more."""
        connection = state.connections.get(socket_id)
        if connection is not None:
            with _isolated("%s to %s failed", what, socket_id):
                connection.send(message)

    # -- subscription_count ------------------------------------------------------------------

    def _count_changed(
        self, app: App, channel: str, ctype: ChannelType, local_only: bool = False
    ) -> None:
        """Schedule a subscription_count for ``channel``: to every node's subscribers after
        a join or leave here, or to this node's only (``local_only``) when every node was
        told of the change (a reaped node)."""
        if not transitions.counts_subscriptions(app.subscription_count, ctype):
            return
        if self._dirty_counts.mark(app.id, channel, local_only):
            # Coalesce: many joins in one burst give one subscription_count per channel.
            self._spawn(self._flush_counts())

    async def _flush_counts(self) -> None:
        await asyncio.sleep(0.05)
        for (app_id, channel), local_only in self._dirty_counts.take().items():
            with _isolated("subscription_count of %s failed", channel):
                await self._flush_count(app_id, channel, local_only)

    async def _flush_count(self, app_id: str, channel: str, local_only: bool) -> None:
        count = await self.broker.subscriptions.count(app_id, channel)
        state = self._states[app_id]
        if not local_only:
            self._count_webhook(state, channel, count)
        if count:
            data = messages.dumps({"subscription_count": count})
            message = messages.event("pusher_internal:subscription_count", channel, data)
            if local_only:
                self._deliver(app_id, channel, message, None)
            else:
                await self.broker.pubsub.publish(app_id, channel, message, None)

    def _count_webhook(self, state: _AppState, channel: str, count: int) -> None:
        app = state.app
        if self.webhooks is None or not self.webhooks.wants(app, "subscription_count"):
            return
        if not state.count_hooks.due(channel, count, self.clock()):
            return
        event = {"name": "subscription_count", "channel": channel, "subscription_count": count}
        self._webhook(app, event)

    # -- timers ------------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        interval = max(
            0.1, min(1.0, self.settings.activity_timeout / 4, self.settings.pong_timeout / 4)
        )
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for connection in self.connections():
                # One connection's failure must not stop the timers of the others.
                with _isolated("timer actions failed for %s", connection.socket_id):
                    actions = connection.session.tick(now)
                    if actions:
                        await self._run(connection, actions)

    async def _report_connections_forever(self) -> None:
        """Every app's ``max_connections`` is cluster-wide: tell the other nodes this
        node's counts and learn theirs, every ``CONNECTION_REPORT_INTERVAL``."""
        while True:
            with _isolated("reporting connection counts failed"):
                counts = self._registry.counts()
                interval = CONNECTION_REPORT_INTERVAL
                self._registry.elsewhere(await self.broker.connections.report(counts, interval))
            await asyncio.sleep(CONNECTION_REPORT_INTERVAL)

    async def _check_history_forever(self) -> None:
        """Every ``history_check_interval``: has a channel with history lost its last
        publication on the way here? (``AppRecovery.check``)"""
        while True:
            await asyncio.sleep(self.settings.history_check_interval)
            for state in self._states.values():
                if state.app.history:
                    with _isolated("checking the history positions of %s failed", state.app.id):
                        await state.recovery.check()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(report_failure)
        return task

    # -- after a broker outage ---------------------------------------------------------------

    async def recheck_presence(self) -> None:
        """Bring every socket's presence roster back to the cluster's (broker recovered).

        Member events published while this node could not hear them are lost, and members
        that joined or left meanwhile were only announced on their own node. The broker's
        roster is the truth again: each socket is sent the member_added / member_removed
        that separate what it was told from it."""
        for state in list(self._states.values()):
            for channel in state.views.channels():
                if self.broker.degraded:
                    return  # out again: the next recovery rechecks
                with _isolated("presence recheck of %s failed", channel):
                    await self._recheck_channel(state, channel)

    async def _recheck_channel(self, state: _AppState, channel: str) -> None:
        state.views.begin_recheck(channel)
        members = await self.broker.presence.members(state.app.id, channel)
        # Degraded: the roster came from this node's mirror and says nothing of the others.
        trusted = members if not self.broker.degraded else None
        for socket_id, events in state.views.recheck(channel, trusted):
            connection = state.connections.get(socket_id)
            if connection is None:
                continue
            with _isolated("presence recheck of %s for %s failed", channel, socket_id):
                for event in events:
                    connection.send(_member_message(channel, event))

    # -- the server API (REST and embedding) -------------------------------------------------

    async def check_backend_rate(self, app: App, events: int) -> None:
        """Count ``events`` against max_backend_events_per_second (cluster-wide); raise when
        over it. Refused events still count, as a client hammering the API keeps paying."""
        total = await self.broker.rates.count_backend_events(app.id, events, self.wall_clock())
        if total > app.max_backend_events_per_second:
            raise BackendRateLimited(
                f"more than {app.max_backend_events_per_second} events per second"
            )

    async def trigger(self, app: App, trigger: Trigger, source: str = "python") -> None:
        """Publish one event to its channels: :meth:`trigger_all` of one."""
        await self.trigger_all(app, (trigger,), source)

    async def trigger_all(
        self, app: App, triggers: Sequence[Trigger], source: str = "python"
    ) -> None:
        """Publish events (a REST batch) to their channels, in order: each encoded once per
        channel, written once per socket.

        ``source`` names the caller for the console: ``rest``, ``console`` or ``python``.
        Plain pub/sub publications are all started before the first is awaited, so that a
        broker that pipelines them (Redis) sends a batch in one round trip; a cache channel
        or one with history waits for those before it (one order per channel).

        Raises :class:`ClusterUnavailable` when the other nodes cannot be reached: before
        anything is published if the broker is known to be degraded (a retry then delivers
        it once), else once the publications started have ended (this node's subscribers
        have them)."""
        if self.broker.degraded:
            raise ClusterUnavailable("the cluster backend is unreachable")
        state = self._states[app.id]
        pubsub = self.broker.pubsub
        # A broker whose publications stay in this process hands them to this node's hub
        # alone: one the hub cannot deliver (no subscriber here: Hub.may_reach) reaches
        # nobody, so it is dropped before its message is even built. Most REST triggers
        # go to channels nobody watches at that moment.
        reaches = state.hub.may_reach if pubsub.local_only else None
        started: list[Awaitable[bool]] = []
        try:
            for trigger in triggers:
                channels = trigger.channels
                state.counters.publications += len(channels)
                if state.tap is not None:
                    state.tap.api_message(
                        list(channels), trigger.name, trigger.data, trigger.socket_id, source
                    )
                for channel in channels:
                    cache = channel.startswith(CACHE_PREFIXES)
                    # ``app.history`` first: most apps keep no history, and then no event
                    # of theirs needs its rule looked up.
                    if not cache and (not app.history or app.stored(channel, trigger.name) is None):
                        if reaches is None or reaches(channel):
                            message = messages.event(trigger.name, channel, trigger.data)
                            started.append(
                                pubsub.publish(app.id, channel, message, trigger.socket_id)
                            )
                        continue
                    message = messages.event(trigger.name, channel, trigger.data)
                    exclude = trigger.socket_id
                    await _all_published(started)
                    if cache:
                        state.cache_misses.forget(channel)
                        now = self.clock()
                        cached = CachedEvent(message, now + app.cache_ttl)
                        await self.broker.cache.set(app.id, channel, cached, now)
                    if not await self._publish(app, channel, trigger.name, message, exclude):
                        raise ClusterUnavailable("the cluster backend stopped answering")
        finally:
            if started:
                await _all_published(started)

    async def _publish(
        self, app: App, channel: str, event: str, message: bytes, exclude: str | None
    ) -> bool:
        """Publish an app's or a client's event: through the channel's history when the app
        keeps one for it (docs/history.md), else over pub/sub. False when the other nodes
        could not be reached (this node's subscribers have it all the same)."""
        rule = app.stored(channel, event)
        if rule is None:
            return await self.broker.pubsub.publish(app.id, channel, message, exclude)
        position = await self.broker.history.publish(
            app.id, channel, message, exclude, size=rule.size, ttl=rule.ttl
        )
        return position is not None

    async def history(self, app: App, channel: str, since: int, limit: int) -> HistoryPage:
        """The channel's kept events after offset ``since`` (raises
        :class:`~tidings.brokers.history.HistoryUnavailable` while degraded)."""
        return await self.broker.history.since(app.id, channel, since, limit)

    async def channels(self, app: App, prefix: str = "") -> dict[str, int]:
        """Occupied channels with their subscription counts (user channels are internal)."""
        return {
            name: count
            for name, count in (await self.broker.subscriptions.channels(app.id)).items()
            if count and name.startswith(prefix) and not name.startswith(USER_CHANNEL_PREFIX)
        }

    async def subscription_count(self, app: App, channel: str) -> int:
        return await self.broker.subscriptions.count(app.id, channel)

    async def occupied(self, app: App, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have a subscriber on any node (one broker call)."""
        return await self.broker.subscriptions.occupied(app.id, channels)

    async def members(self, app: App, channel: str) -> list[Member]:
        return await self.broker.presence.members(app.id, channel)

    async def cached(self, app: App, channel: str) -> CachedEvent | None:
        return await self.broker.cache.get(app.id, channel, self.clock())

    async def terminate_user(self, app: App, user_id: str) -> None:
        """Close every connection signed in as ``user_id``, on every node."""
        await self.broker.control.send(app.id, Terminate(user_id))

    async def drain(self, code: ErrorCode = ErrorCode.RECONNECT) -> None:
        """Refuse new connections and close every one with ``code`` (4200: reconnect)."""
        self.draining = True
        for connection in self.connections():
            with _isolated("closing %s to drain failed", connection.socket_id):
                self._states[connection.app.id].counters.count_close(int(code))
                connection.close(int(code), "Server shutting down")


def _watchlist_message(kind: str, user_ids: list[str]) -> bytes:
    data = messages.dumps({"events": [{"name": kind, "user_ids": user_ids}]})
    return messages.event("pusher_internal:watchlist_events", data=data)


def _member_message(channel: str, event: MemberEvent) -> bytes:
    if event.added:
        data = messages.dumps({"user_id": event.user_id, "user_info": event.user_info})
        return messages.event("pusher_internal:member_added", channel, data)
    data = messages.dumps({"user_id": event.user_id})
    return messages.event("pusher_internal:member_removed", channel, data)


async def _all_published(started: list[Awaitable[bool]]) -> None:
    """Await every publication ``started``, in order (each one, even after a failure: a
    coroutine never awaited would not publish); raise ClusterUnavailable if any failed."""
    reached = True
    for publication in started:
        if not await publication:
            reached = False
    started.clear()
    if not reached:
        raise ClusterUnavailable("the cluster backend stopped answering")
