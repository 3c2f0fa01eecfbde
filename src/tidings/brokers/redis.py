"""The Redis broker: many processes and machines behave as one Pusher server.

Fan-out: a publication is written to local subscribers at once and PUBLISHed (or
SPUBLISHed, with ``sharded``) on ``{prefix}#{app}#{channel}`` with its Pusher message (JSON:
each edge frames it for its clients).
A node SUBSCRIBEs only to channels it has local subscribers for, and skips its own
publications when they come back. Order per channel is publish order per publishing node
(one connection per node publishes); delivery is at most once.

State: subscription sets, presence members and signed-in users live in Redis, changed by
the Lua scripts in ``lua/`` so every multi-key change is atomic. Each node keeps indexes of
what it added, heartbeats, and reaps nodes that stopped heartbeating (their sockets leave
presence and channel counts, and the survivors announce ``member_removed``).

Outage: the node also keeps a mirror of its own sockets. While Redis is unreachable it
serves its local clients from the mirror (``degraded``); when Redis returns it re-subscribes
its channels and writes the mirror back, removing what changed while it was away. Once
every node has had time to do the same (``recovery_settle``), the node is told to re-read
the rosters it shows (:meth:`RedisBroker.on_recovered`): member events published while it
could not hear them are gone, Redis pub/sub keeps nothing.

Bus hygiene: every message the listener reads is decoded by ``bus.py`` and handled on its
own; one that is not what a node writes, or whose handler raises, is dropped and counted
(``bus``) and the listener reads on. If the listener task dies anyway, the node is marked
degraded and a new listener started (which resyncs, as after an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources

import orjson
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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
from tidings.brokers.bus import (
    BusStats,
    Dropped,
    decode_control,
    decode_publication,
    encode_control,
    encode_publication,
)
from tidings.brokers.latency import RoundTrips
from tidings.protocol import messages
from tidings.protocol.session import Member
from tidings.redaction import public_url, scrub
from tidings.tasks import spawn

log = logging.getLogger("tidings.redis")

SEP = "\x1f"  # separates the parts of a node index entry (not a channel-name character)
RECONNECT_BACKOFF_MAX = 2.0
COMMAND_TIMEOUT = 2.0
POOL_SIZE = 32  # connections to Redis per node, one of them held by pub/sub
FAILURES = (RedisError, OSError, asyncio.TimeoutError)
LISTENER_RESTART_DELAY = 0.5  # seconds before a listener that died is started again
# While Redis stays unreachable, a reminder this often: the first error scrolls away, and
# an operator reading the log later must still see that this node serves only its own clients.
UNREACHABLE_REPORT_INTERVAL = 30.0
# After Redis returns, how long every node gets to reconnect (backoff up to 2 s) and write
# its sockets back before this node re-reads the presence rosters its sockets were shown.
RECOVERY_SETTLE = RECONNECT_BACKOFF_MAX + 1.0

_SCRIPTS = (
    "subscribe",
    "unsubscribe",
    "presence_join",
    "presence_leave",
    "user_online",
    "user_offline",
    "heartbeat",
    "reap_node",
)


def _load_script(name: str) -> str:
    return resources.files("tidings.brokers").joinpath(f"lua/{name}.lua").read_text()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_members(flat: list[bytes]) -> list[Member]:
    return [Member(flat[i].decode(), orjson.loads(flat[i + 1])) for i in range(0, len(flat), 2)]


def check_prefix(prefix: str) -> None:
    """Keys are ``prefix:…`` and topics ``prefix#…``: neither separator may be in it."""
    if not prefix or "#" in prefix or ":" in prefix:
        raise ValueError("redis prefix must be non-empty without '#' or ':'")


class ClusterRedis:
    """The keys and bus of one Tidings cluster in one Redis, as every writer uses them.

    Shared by :class:`RedisBroker` (every node) and the publish-only
    :class:`tidings.clients.redis.RedisClient`, so that a publication, a cached event or a
    backend-event count written by either is byte for byte what the other writes and reads.
    Every method raises what redis-py raises (see ``FAILURES``): each caller decides what an
    unreachable Redis means to it (a node serves its local clients, a client refuses).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str, sharded: bool) -> None:
        check_prefix(prefix)
        self.redis = redis
        self.prefix = prefix
        self.sharded = sharded
        self._count_and_publish = redis.register_script(_load_script("count_and_publish"))

    def key(self, app_id: str, *parts: str) -> str:
        return ":".join((self.prefix, app_id, *parts))

    def topic(self, app_id: str, channel: str) -> bytes:
        return f"{self.prefix}#{app_id}#{channel}".encode()

    @property
    def control_topic(self) -> bytes:
        return f"{self.prefix}#control".encode()

    async def publish(
        self, origin: str, app_id: str, channel: str, message: bytes, exclude: str | None
    ) -> None:
        """``message`` to every node subscribed to ``channel`` (nodes skip their own origin).

        The publish-only client (``tidings.clients.redis``) publishes through here too, so
        the bus format has one writer."""
        payload = encode_publication(origin, exclude, message)
        if self.sharded:
            await self.redis.spublish(self.topic(app_id, channel), payload)
        else:
            await self.redis.publish(self.topic(app_id, channel), payload)

    async def control(self, origin: str, app_id: str, message: ControlMessage) -> None:
        """``message`` to every node but ``origin``."""
        await self.redis.publish(self.control_topic, encode_control(origin, app_id, message))

    async def cache_set(self, app_id: str, channel: str, message: bytes, ttl: float) -> None:
        """The last event of a cache channel (the Pusher message), kept ``ttl`` seconds."""
        ttl_ms = max(1, int(ttl * 1000))
        await self.redis.set(self.key(app_id, "cache", channel), message, px=ttl_ms)

    async def cache_get(self, app_id: str, channel: str) -> tuple[bytes, float] | None:
        """The cached message and the seconds it has left, or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.key(app_id, "cache", channel))
            pipe.pttl(self.key(app_id, "cache", channel))
            message, ttl_ms = await pipe.execute()
        if message is None or ttl_ms is None or ttl_ms <= 0:
            return None
        return bytes(message), ttl_ms / 1000

    async def count_backend_events(self, app_id: str, events: int, second: int) -> int:
        """Add ``events`` to the cluster-wide count of ``second``; the new total."""
        key = self.key(app_id, "rate", str(second))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incrby(key, events)
            pipe.expire(key, 2)
            total, _ = await pipe.execute()
        return int(total)

    async def count_and_publish(
        self,
        origin: str,
        app_id: str,
        second: int,
        events: int,
        limit: int,
        publications: Sequence[tuple[str, bytes, str | None]],
    ) -> int:
        """:meth:`count_backend_events` (``events``), then :meth:`publish` each of
        ``publications`` (channel, message, exclude) in order unless the new total is over
        ``limit``: one round trip. Returns the total. Not for sharded pub/sub (a script's
        SPUBLISH must stay in one slot): sharded callers count and publish one by one."""
        arguments: list[bytes | int] = [events, limit]
        for channel, message, exclude in publications:
            arguments += [self.topic(app_id, channel), encode_publication(origin, exclude, message)]
        key = self.key(app_id, "rate", str(second))
        return int(await self._count_and_publish(keys=[key], args=arguments))

    async def subscription_count(self, app_id: str, channel: str) -> int:
        return int(await self.redis.scard(self.key(app_id, "subs", channel)))

    async def channels(self, app_id: str) -> dict[str, int]:
        """Every channel with at least one subscriber, and its subscription count."""
        names = [_text(n) for n in await self.redis.smembers(self.key(app_id, "channels"))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.key(app_id, "subs", name))
            counts = await pipe.execute()
        return {name: int(count) for name, count in zip(names, counts, strict=True) if count}

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have a subscriber: one pipelined EXISTS per channel, one
        round trip (a subscription set that empties is deleted by Redis)."""
        if not channels:
            return set()
        names = list(dict.fromkeys(channels))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.key(app_id, "subs", name))
            found = await pipe.execute()
        return {name for name, exists in zip(names, found, strict=True) if exists}

    async def presence_members(self, app_id: str, channel: str) -> list[Member]:
        members = await self.redis.hgetall(self.key(app_id, "members", channel))
        return [Member(_text(k), orjson.loads(v)) for k, v in members.items()]


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings",
        node_id: str | None = None,
        sharded: bool = False,
        node_ttl: float = 15.0,
        recovery_settle: float = RECOVERY_SETTLE,
        unreachable_report_interval: float = UNREACHABLE_REPORT_INTERVAL,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._node_id = node_id or secrets.token_hex(6)
        self._sharded = sharded
        self._node_ttl = node_ttl
        self._recovery_settle = recovery_settle
        self._report_interval = unreachable_report_interval
        self._unreachable_since: float | None = None  # monotonic; None while connected
        self._last_report = 0.0
        # A burst of commands (a reconnect storm subscribing thousands of sockets) waits for
        # a pooled connection instead of failing: a full pool is load, not an outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT * 5,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._cluster = ClusterRedis(self._redis, prefix, sharded)
        self._scripts = {name: self._redis.register_script(_load_script(name)) for name in _SCRIPTS}
        self._deliver: Deliver | None = None
        self._control: Control | None = None
        self._pubsub: PubSub | None = None
        self._degraded = True  # until the first successful connection
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._recovered: Recovered | None = None
        self._synced_once = False
        self._resync_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        # The mirror of this node's own sockets: authoritative for what this node holds.
        self._subs: dict[tuple[str, str], set[str]] = {}
        self._presence: dict[tuple[str, str], dict[str, Member]] = {}
        self._users: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._rate: dict[str, tuple[int, int]] = {}
        self._mirror_version = 0
        self._node_handler: NodeHandler | None = None
        self._reaped: Reaped | None = None
        self._resync_needed = False
        self.round_trips = RoundTrips()  # state scripts and heartbeats, never publishes
        self.bus = BusStats()  # dropped bus messages and listener restarts, for /metrics

    # -- identity and keys -------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def degraded(self) -> bool:
        return self._degraded

    def _key(self, app_id: str, *parts: str) -> str:
        return self._cluster.key(app_id, *parts)

    def _node_key(self, kind: str, node_id: str | None = None) -> str:
        return f"{self._prefix}:node:{node_id or self._node_id}:{kind}"

    def _member(self, socket_id: str) -> str:
        return f"{self._node_id}/{socket_id}"

    def _topic(self, app_id: str, channel: str) -> bytes:
        return self._cluster.topic(app_id, channel)

    @property
    def _control_topic(self) -> bytes:
        return self._cluster.control_topic

    def _node_topic(self, node_id: str) -> bytes:
        return f"{self._prefix}#node#{node_id}".encode()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, deliver: Deliver, control: Control) -> None:
        self._deliver = deliver
        self._control = control
        self._start_listener()
        self._tasks = [spawn(self._heartbeat_forever(), "redis heartbeat")]
        # Give Redis a moment so a healthy start is not reported degraded; never block on it.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), COMMAND_TIMEOUT)

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (*self._tasks, self._listener, self._recovery) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            # A task that failed was logged when it ended (tasks.spawn): just stop.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self._degraded:
            # A clean stop: remove what is left of this node now rather than after node_ttl.
            with contextlib.suppress(*FAILURES):
                await self._reap(self._node_id, "stopped")
        if self._pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await self._pubsub.aclose()
        with contextlib.suppress(*FAILURES):
            # The pool was passed in, so the client does not close it by itself.
            await self._redis.aclose(close_connection_pool=True)
        self._deliver = None
        self._control = None

    def _failed(self, exc: BaseException) -> None:
        self._report_unreachable(exc)
        self._degraded = True
        self._connected.clear()
        # Commands failed: the listener must reconnect and resync even if its own
        # connection still looks healthy.
        self._resync_needed = True

    def _report_unreachable(self, exc: BaseException) -> None:
        """Log an outage once when it starts (an error if Redis was never reached: likely a
        wrong URL), then a warning every ``unreachable_report_interval`` seconds while it
        lasts. The URL is shown without its password; ``scrub`` keeps it out of the reason
        too, should a message ever quote the URL."""
        now = time.monotonic()
        where = public_url(self._url)
        reason = scrub(str(exc), self._url)
        since = self._unreachable_since
        if since is None:
            self._unreachable_since = self._last_report = now
            if not self._synced_once:
                log.error(
                    "cannot reach Redis at %s (%s): serving local clients only, retrying",
                    where,
                    reason,
                )
            elif not self._degraded:
                log.warning(
                    "redis unreachable at %s (%s): serving local clients only", where, reason
                )
        elif now - self._last_report >= self._report_interval:
            self._last_report = now
            log.warning(
                "redis at %s still unreachable after %.0f s (%s): serving local clients only",
                where,
                now - since,
                reason,
            )

    def _changed(self) -> None:
        self._mirror_version += 1

    # -- pub/sub -----------------------------------------------------------------------------

    def _start_listener(self) -> None:
        self._listener = spawn(self._listen_forever(), "redis listener")
        self._listener.add_done_callback(self._listener_ended)

    def _listener_ended(self, task: asyncio.Task[None]) -> None:
        """The listener only ends when the broker closes; if it died (spawn logged why),
        the node cannot hear other nodes: say so (degraded) and start a new one, which
        reconnects and resyncs as after an outage."""
        if self._closing or task is not self._listener:
            return
        self.bus.listener_restarts += 1
        self._failed(RuntimeError("the redis listener stopped"))
        log.error("redis listener stopped; starting a new one")
        asyncio.get_running_loop().call_later(LISTENER_RESTART_DELAY, self._restart_listener)

    def _restart_listener(self) -> None:
        if not self._closing:
            self._start_listener()

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while not self._closing:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                topics = [self._topic(app, ch) for (app, ch) in self._subs]
                await pubsub.subscribe(self._control_topic, self._node_topic(self._node_id))
                if topics:
                    if self._sharded:
                        await pubsub.ssubscribe(*topics)
                    else:
                        await pubsub.subscribe(*topics)
                await self._resync()
                backoff = 0.1
                await self._read(pubsub)
            except FAILURES as exc:
                self._failed(exc)
            except Exception as exc:  # a bug, or state in Redis no node wrote: retry anyway
                log.exception("redis listener failed; reconnecting")
                self._failed(exc)
            finally:
                if self._pubsub is not None:
                    with contextlib.suppress(*FAILURES):
                        await self._pubsub.aclose()
                    self._pubsub = None
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    async def _read(self, pubsub: PubSub) -> None:
        control_topic = self._control_topic
        node_topic = self._node_topic(self._node_id)
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if self._resync_needed:
                raise ConnectionError("a command failed: reconnecting to resync")
            if message is None or message["type"] not in ("message", "smessage"):
                continue
            topic: bytes = message["channel"]
            data: bytes = message["data"]
            # One message per try: whatever it holds, the listener reads on.
            try:
                if topic == control_topic:
                    await self._on_control(data)
                elif topic == node_topic:
                    if self._node_handler is not None:
                        await self._node_handler(data)
                else:
                    self._on_publication(topic, data)
            except Dropped as exc:
                self.bus.drop(exc.reason, topic, len(data), exc.detail)
            except Exception as exc:
                self.bus.drop("handler_error", topic, len(data), exc)

    def _on_publication(self, topic: bytes, data: bytes) -> None:
        if data.startswith(self._own_origin) or self._deliver is None:
            return  # delivered locally when it was published
        publication = decode_publication(data)
        _, app_id, channel = topic.decode().split("#", 2)
        self._deliver(app_id, channel, publication.message, publication.exclude)

    @property
    def _own_origin(self) -> bytes:
        return self._node_id.encode() + b"\x00"

    async def _on_control(self, data: bytes) -> None:
        envelope = decode_control(data)
        if envelope.origin == self._node_id:
            return
        await self._run_control(envelope.app_id, envelope.message)

    async def _run_control(self, app_id: str, message: ControlMessage) -> None:
        if self._control is not None:
            result = self._control(app_id, message)
            if inspect.isawaitable(result):
                await result

    async def publish(self, app_id: str, channel: str, message: bytes, exclude: str | None) -> bool:
        if self._deliver is not None:
            self._deliver(app_id, channel, message, exclude)
        if self._degraded:
            return False  # at most once: other nodes miss what is published during an outage
        try:
            await self._cluster.publish(self._node_id, app_id, channel, message, exclude)
        except FAILURES as exc:
            self._failed(exc)
            return False
        return True

    async def control(self, app_id: str, message: ControlMessage) -> None:
        await self._run_control(app_id, message)
        if self._degraded:
            return
        try:
            await self._cluster.control(self._node_id, app_id, message)
        except FAILURES as exc:
            self._failed(exc)

    async def _listen(self, app_id: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or self._degraded:
            return  # subscribed from the mirror on reconnect
        topic = self._topic(app_id, channel)
        try:
            if self._sharded:
                await pubsub.ssubscribe(topic)
            else:
                await pubsub.subscribe(topic)
        except FAILURES as exc:
            self._failed(exc)

    async def _unlisten(self, app_id: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or self._degraded:
            return
        topic = self._topic(app_id, channel)
        try:
            if self._sharded:
                await pubsub.sunsubscribe(topic)
            else:
                await pubsub.unsubscribe(topic)
        except FAILURES as exc:
            self._failed(exc)

    # -- subscriptions -----------------------------------------------------------------------

    def _sub_args(self, app_id: str, channel: str, socket_id: str) -> tuple[list[str], list[str]]:
        keys = [
            self._key(app_id, "subs", channel),
            self._key(app_id, "channels"),
            self._node_key("subs"),
        ]
        args = [self._member(socket_id), channel, SEP.join((app_id, channel, socket_id))]
        return keys, args

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        sockets = self._subs.setdefault((app_id, channel), set())
        first_local = not sockets
        sockets.add(socket_id)
        self._changed()
        if first_local:
            await self._listen(app_id, channel)
        keys, args = self._sub_args(app_id, channel, socket_id)
        return await self._call("subscribe", keys, args, fallback=len(sockets))

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        sockets = self._subs.get((app_id, channel))
        self._changed()
        if sockets is not None:
            sockets.discard(socket_id)
            if not sockets:
                del self._subs[(app_id, channel)]
                await self._unlisten(app_id, channel)
        keys, args = self._sub_args(app_id, channel, socket_id)
        return await self._call("unsubscribe", keys, args, fallback=len(sockets or ()))

    async def subscription_count(self, app_id: str, channel: str) -> int:
        local = len(self._subs.get((app_id, channel), ()))
        if self._degraded:
            return local
        try:
            return await self._cluster.subscription_count(app_id, channel)
        except FAILURES as exc:
            self._failed(exc)
            return local

    async def channels(self, app_id: str) -> dict[str, int]:
        local = {ch: len(s) for (app, ch), s in self._subs.items() if app == app_id}
        if self._degraded:
            return local
        try:
            return await self._cluster.channels(app_id)
        except FAILURES as exc:
            self._failed(exc)
            return local

    async def occupied(self, app_id: str, channels: Sequence[str]) -> set[str]:
        if self._degraded:
            return {c for c in channels if (app_id, c) in self._subs}
        try:
            return await self._cluster.occupied(app_id, channels)
        except FAILURES as exc:
            self._failed(exc)
            return {c for c in channels if (app_id, c) in self._subs}

    # -- presence ----------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str, user_id: str) -> list[str]:
        return [
            self._key(app_id, "members", channel),
            self._key(app_id, "msock", channel, user_id),
            self._node_key("presence"),
        ]

    def _local_roster(self, app_id: str, channel: str) -> list[Member]:
        members: dict[str, Member] = {}
        for member in self._presence.get((app_id, channel), {}).values():
            members.setdefault(member.user_id, member)
        return list(members.values())

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        local = self._presence.setdefault((app_id, channel), {})
        local_users = {m.user_id for m in local.values()}
        self._changed()
        if self._degraded:
            if member.user_id not in local_users and len(local_users) >= max_members:
                return PresenceJoin(False, False, self._local_roster(app_id, channel))
            local[socket_id] = member
            first = member.user_id not in local_users
            return PresenceJoin(True, first, self._local_roster(app_id, channel))
        keys = self._presence_keys(app_id, channel, member.user_id)
        entry = SEP.join((app_id, channel, socket_id, member.user_id))
        args = [
            member.user_id,
            messages.dumps(member.user_info),
            self._member(socket_id),
            str(max_members),
            entry,
        ]
        try:
            accepted, first, flat = await self._scripts["presence_join"](keys=keys, args=args)
        except FAILURES as exc:
            self._failed(exc)
            return await self.presence_join(app_id, channel, socket_id, member, max_members)
        if accepted:
            local[socket_id] = member
        elif not local:
            del self._presence[(app_id, channel)]
        return PresenceJoin(bool(accepted), bool(first), _decode_members(flat))

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        local = self._presence.get((app_id, channel), {})
        local.pop(socket_id, None)
        self._changed()
        locally_last = all(m.user_id != user_id for m in local.values())
        if not local:
            self._presence.pop((app_id, channel), None)
        keys = self._presence_keys(app_id, channel, user_id)
        args = [user_id, self._member(socket_id), SEP.join((app_id, channel, socket_id, user_id))]
        return bool(await self._call("presence_leave", keys, args, fallback=int(locally_last)))

    async def presence_members(self, app_id: str, channel: str) -> list[Member]:
        if self._degraded:
            return self._local_roster(app_id, channel)
        try:
            return await self._cluster.presence_members(app_id, channel)
        except FAILURES as exc:
            self._failed(exc)
            return self._local_roster(app_id, channel)

    # -- users -------------------------------------------------------------------------------

    def _user_call(self, app_id: str, user_id: str, socket_id: str) -> tuple[list[str], list[str]]:
        keys = [self._key(app_id, "user", user_id), self._node_key("users")]
        return keys, [self._member(socket_id), SEP.join((app_id, socket_id, user_id))]

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users[(app_id, user_id)]
        sockets.add(socket_id)
        self._changed()
        keys, args = self._user_call(app_id, user_id, socket_id)
        return bool(await self._call("user_online", keys, args, fallback=int(len(sockets) == 1)))

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users.get((app_id, user_id), set())
        sockets.discard(socket_id)
        self._changed()
        if not sockets:
            self._users.pop((app_id, user_id), None)
        keys, args = self._user_call(app_id, user_id, socket_id)
        return bool(await self._call("user_offline", keys, args, fallback=int(not sockets)))

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        local = [u for u in user_ids if self._users.get((app_id, u))]
        if self._degraded or not user_ids:
            return local
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.scard(self._key(app_id, "user", user_id))
                counts = await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)
            return local
        return [u for u, n in zip(user_ids, counts, strict=True) if n]

    # -- cache channels and rate limits ------------------------------------------------------

    async def cache_set(self, app_id: str, channel: str, event: CachedEvent, now: float) -> None:
        if self._degraded:
            return
        try:
            await self._cluster.cache_set(app_id, channel, event.message, event.expires_at - now)
        except FAILURES as exc:
            self._failed(exc)

    async def cache_get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        if self._degraded:
            return None
        try:
            cached = await self._cluster.cache_get(app_id, channel)
        except FAILURES as exc:
            self._failed(exc)
            return None
        if cached is None:
            return None
        message, ttl = cached
        return CachedEvent(message, now + ttl)

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        second = int(now)
        start, local = self._rate.get(app_id, (second, 0))
        local = (local if start == second else 0) + events
        self._rate[app_id] = (second, local)
        if self._degraded:
            return local
        try:
            return await self._cluster.count_backend_events(app_id, events, second)
        except FAILURES as exc:
            self._failed(exc)
            return local

    # -- node-to-node (HTTP fallback sessions) -----------------------------------------------

    async def claim(self, key: str, ttl: float) -> str:
        if self._degraded:
            return self._node_id
        name = f"{self._prefix}:claim:{key}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(name, self._node_id, nx=True, px=int(ttl * 1000))
                pipe.get(name)
                _, owner = await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)
            return self._node_id
        return _text(owner) if owner is not None else self._node_id

    async def refresh_claims(self, keys: list[str], ttl: float) -> None:
        if self._degraded or not keys:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(f"{self._prefix}:claim:{key}", self._node_id, px=int(ttl * 1000))
                await pipe.execute()
        except FAILURES as exc:
            self._failed(exc)

    def on_reaped(self, handler: Reaped) -> None:
        self._reaped = handler

    def on_node_message(self, handler: NodeHandler) -> None:
        self._node_handler = handler

    def on_recovered(self, handler: Recovered) -> None:
        self._recovered = handler

    async def to_node(self, node_id: str, payload: bytes) -> None:
        if node_id == self._node_id:
            if self._node_handler is not None:
                await self._node_handler(payload)
            return
        if self._degraded:
            return
        try:
            await self._redis.publish(self._node_topic(node_id), payload)
        except FAILURES as exc:
            self._failed(exc)

    # -- scripts, liveness, resync -----------------------------------------------------------

    async def _call(self, script: str, keys: list[str], args: list[str], fallback: int) -> int:
        """Run a state script; while Redis is away, answer from this node's mirror."""
        if self._degraded:
            return fallback
        try:
            started = time.perf_counter()
            result = int(await self._scripts[script](keys=keys, args=args))
            self.round_trips.observe(time.perf_counter() - started)
            return result
        except FAILURES as exc:
            self._failed(exc)
            return fallback

    def _reap_keys(self, node_id: str) -> list[str]:
        return [
            f"{self._prefix}:nodes",
            self._node_key("subs", node_id),
            self._node_key("presence", node_id),
            self._node_key("users", node_id),
        ]

    async def _heartbeat_forever(self) -> None:
        interval = max(0.2, self._node_ttl / 3)
        while not self._closing:
            await asyncio.sleep(interval)
            if self._degraded:
                continue  # the listener reconnects and resyncs
            try:
                await self._heartbeat()
            except FAILURES as exc:
                self._failed(exc)
            except Exception as exc:  # never let liveness stop: the cluster would reap us
                log.exception("redis heartbeat failed")
                self._failed(exc)

    async def _heartbeat(self) -> None:
        started = time.perf_counter()
        missing, dead = await self._scripts["heartbeat"](
            keys=[f"{self._prefix}:nodes"],
            args=[self._node_id, str(int(self._node_ttl * 1000))],
        )
        self.round_trips.observe(time.perf_counter() - started)
        if missing:
            # Another node reaped us (we were silent too long): write our state back.
            log.warning("node %s was declared dead by the cluster; re-announcing", self._node_id)
            await self._resync()
            self._schedule_recovered()  # the reap told every node our members left
        for raw in dead:
            node_id = raw.decode()
            if node_id != self._node_id:
                await self._reap(node_id, "stopped heartbeating")

    async def _reap(self, node_id: str, why: str) -> None:
        removed, offline, recount, vacated = await self._scripts["reap_node"](
            keys=self._reap_keys(node_id), args=[node_id, self._prefix]
        )
        if removed or offline:
            log.warning(
                "node %s %s: removed %d presence member(s), %d user(s)",
                node_id,
                why,
                len(removed),
                len(offline),
            )
        # A node stopping cleanly tells the others only: its own sockets are already gone.
        announce = (
            self._publish_control_remote if node_id == self._node_id else self._control_everywhere
        )
        for app_id, channel, user_id in removed:
            message = ControlMessage("member_removed", user_id.decode(), channel.decode())
            await announce(app_id.decode(), message)
        for app_id, user_id in offline:
            await announce(app_id.decode(), ControlMessage("offline", user_id.decode()))
        for app_id, channel in recount:
            message = ControlMessage("recount", channel=channel.decode())
            await announce(app_id.decode(), message)
        if self._reaped is not None and node_id != self._node_id:
            for app_id, channel, user_id in removed:
                self._reaped(app_id.decode(), "member_removed", channel.decode(), user_id.decode())
            for app_id, channel in vacated:
                self._reaped(app_id.decode(), "channel_vacated", channel.decode(), "")

    async def _control_everywhere(self, app_id: str, message: ControlMessage) -> None:
        """Run a control message here and on every other node, degraded or not (used while
        resyncing, when Redis is back but the node is not yet marked healthy)."""
        await self._run_control(app_id, message)
        await self._publish_control_remote(app_id, message)

    async def _resync(self) -> None:
        """Make Redis hold exactly this node's mirror (after an outage or being reaped).

        Entries Redis has that the mirror lacks are removed through the leave scripts (so a
        user who left during the outage gets member_removed); entries the mirror has are
        added through the join scripts (idempotent; a user who joined during the outage gets
        member_added). Then the node is marked healthy.
        """
        async with self._resync_lock:
            # Sockets come and go while this runs (the mirror is updated in degraded mode);
            # repeat until a pass saw no change, so nothing is left out of Redis.
            for _ in range(10):
                version = self._mirror_version
                await self._resync_once()
                if version == self._mirror_version:
                    break
            was_degraded = self._degraded
            self._degraded = False
            self._resync_needed = False
            self._connected.set()
            if was_degraded:
                since, self._unreachable_since = self._unreachable_since, None
                where = public_url(self._url)
                if since is None:
                    log.info("redis connected at %s (node %s)", where, self._node_id)
                else:
                    log.info(
                        "redis connected at %s after %.0f s unreachable (node %s)",
                        where,
                        time.monotonic() - since,
                        self._node_id,
                    )
                if self._synced_once:
                    self._schedule_recovered()
            self._synced_once = True

    def _schedule_recovered(self) -> None:
        """Call the recovered handler once every node had ``recovery_settle`` seconds to
        write its state back (a later recovery starts the wait again)."""
        if self._recovery is not None:
            self._recovery.cancel()
        self._recovery = spawn(self._announce_recovered(), "redis recovered")

    async def _announce_recovered(self) -> None:
        await asyncio.sleep(self._recovery_settle)
        if self._recovered is not None and not self._degraded:
            await self._recovered()

    async def _resync_once(self) -> None:
        node = self._node_id
        await self._scripts["heartbeat"](
            keys=[f"{self._prefix}:nodes"], args=[node, str(int(self._node_ttl * 1000))]
        )
        held_subs = {_text(e) for e in await self._redis.smembers(self._node_key("subs"))}
        held_presence = {_text(e) for e in await self._redis.smembers(self._node_key("presence"))}
        held_users = {_text(e) for e in await self._redis.smembers(self._node_key("users"))}
        want_subs = {
            SEP.join((app, ch, s)) for (app, ch), sockets in self._subs.items() for s in sockets
        }
        want_presence = {
            SEP.join((app, ch, s, m.user_id))
            for (app, ch), members in self._presence.items()
            for s, m in members.items()
        }
        want_users = {
            SEP.join((app, s, u)) for (app, u), sockets in self._users.items() for s in sockets
        }
        for entry in held_subs - want_subs:
            app, ch, s = entry.split(SEP, 2)
            keys, args = self._sub_args(app, ch, s)
            await self._scripts["unsubscribe"](keys=keys, args=args)
        for entry in held_presence - want_presence:
            app, ch, s, user = entry.split(SEP, 3)
            keys = self._presence_keys(app, ch, user)
            if await self._scripts["presence_leave"](
                keys=keys, args=[user, self._member(s), entry]
            ):
                await self._control_everywhere(app, ControlMessage("member_removed", user, ch))
        for entry in held_users - want_users:
            app, s, user = entry.split(SEP, 2)
            keys, args = self._user_call(app, user, s)
            if await self._scripts["user_offline"](keys=keys, args=args):
                await self._control_everywhere(app, ControlMessage("offline", user))
        for entry in want_subs - held_subs:
            app, ch, s = entry.split(SEP, 2)
            keys, args = self._sub_args(app, ch, s)
            await self._scripts["subscribe"](keys=keys, args=args)
        for (app, ch), members in list(self._presence.items()):
            for s, m in list(members.items()):
                entry = SEP.join((app, ch, s, m.user_id))
                if entry in held_presence:
                    continue
                args = [m.user_id, messages.dumps(m.user_info), self._member(s), str(2**31), entry]
                _, first, _ = await self._scripts["presence_join"](
                    keys=self._presence_keys(app, ch, m.user_id), args=args
                )
                if first:
                    # Local sockets learnt of this member while Redis was away; others not.
                    info = messages.dumps(m.user_info)
                    message = ControlMessage("member_added", m.user_id, ch, info)
                    await self._publish_control_remote(app, message)
        for entry in want_users - held_users:
            app, s, user = entry.split(SEP, 2)
            keys, args = self._user_call(app, user, s)
            if await self._scripts["user_online"](keys=keys, args=args):
                await self._publish_control_remote(app, ControlMessage("online", user))

    async def _publish_control_remote(self, app_id: str, message: ControlMessage) -> None:
        await self._cluster.control(self._node_id, app_id, message)
