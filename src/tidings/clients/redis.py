"""Publish straight into a Tidings cluster through its Redis: no HTTP hop, no node.

A :class:`RedisClient` does what ``POST /events`` does on a node of the cluster, with the
node's own code for everything that reaches Redis (:class:`~tidings.brokers.redis.ClusterRedis`):

- the same checks (:func:`~tidings.protocol.rest.check_trigger`) and errors;
- the same cluster-wide count of backend events per second (``max_backend_events_per_second``);
- for a cache channel, the same cached message, so a later subscriber gets it and
  ``info=cache`` shows it;
- then the same bytes a node PUBLISHes (or SPUBLISHes) on ``{prefix}#{app}#{channel}``;
  or, for a channel with history (the ``history`` option: give the app's rules), the
  same Lua script a node runs, which keeps the event and publishes it with its position.

The client has no app configuration: the limits are options whose defaults are the server's,
and ``redis_prefix`` / ``redis_sharded`` must match the cluster's settings.

Order: calls are written to Redis one after the other, in the order they were made on the
client's loop, so events published in order arrive in order; calls made together share a
script call (one round trip), calls made while it is out share the next. Redis unreachable:
every call raises ``PublishError(503)``, as the REST API answers while its node cannot
reach Redis (a node would reach its own sockets; a client has none, so nothing was
published).

What only a node can do, and this client therefore does not:

- refuse an unknown or disabled app (401, 403): the apps are in the nodes' configuration,
  not in Redis. Events for an app id no node serves are published and heard by nobody;
- its own bookkeeping: the ``publications`` counter of ``/metrics``, and forgetting that
  it announced a cache channel's ``cache_miss`` webhook (a node announces one per channel
  per ``cache_ttl``; after a client trigger the next miss may wait out that window).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tidings.backends import Event, PublishError
from tidings.brokers.control import Terminate
from tidings.brokers.redis import COMMAND_TIMEOUT, FAILURES, ClusterRedis, check_prefix
from tidings.brokers.redis.connect import close, connect, is_cluster_url
from tidings.brokers.redis.history import HistoryStore
from tidings.core.apps import HistoryRule, stored_under
from tidings.protocol import messages
from tidings.protocol.channels import USER_CHANNEL_PREFIX, channel_type, name_error
from tidings.protocol.rest import RestError, RestLimits, Trigger, TriggerChecker, parse_info
from tidings.protocol.session import Member
from tidings.redaction import public_url, scrub

POOL_SIZE = 8  # publishes go out one pipeline at a time; the rest are reads
# Reads in flight at once, in arrival order: the pool refuses a command past its size
# ("Too many connections") instead of waiting, and one connection stays for the sender.
MAX_READS = POOL_SIZE - 1
MAX_PIPELINE = 256  # calls per pipeline; more wait for the next one


class Answer(Protocol):
    """Where a queued call's outcome goes: its caller's future, or a
    :class:`~tidings.loop_bridge.Reply` to a caller on another loop."""

    def done(self) -> bool: ...

    def set_result(self, result: None) -> None: ...

    def set_exception(self, error: BaseException) -> None: ...


_Queued = tuple[list[Trigger], Answer]


def history_rules(rules: Sequence[HistoryRule | Mapping[str, Any]]) -> tuple[HistoryRule, ...]:
    """The rules as a node holds them, checked as a node checks its configuration."""
    if not rules:
        return ()
    from tidings.config import AppHistorySettings  # pydantic: only when rules are given

    return tuple(
        rule if isinstance(rule, HistoryRule) else AppHistorySettings(**rule).to_rule()
        for rule in rules
    )


class RedisClient:
    """The :class:`~tidings.backends.Backend` of ``Realtime.client("redis://…")``.

    ``max_backend_events_per_second``, ``cache_ttl`` and ``history`` are the app's settings
    in the cluster's configuration (same names, same defaults): the count is shared with
    the cluster's nodes, and an event to a channel with history that the client published
    without its rule would be missing from the channel's history, so give what they use.
    ``history``: the ``[[apps.history]]`` rules, as dicts (``{"pattern": "chat-*", "size":
    100, "ttl": 300}``) or :class:`~tidings.core.apps.HistoryRule`.
    """

    def __init__(
        self,
        url: str,
        app_id: str,
        *,
        redis_prefix: str = "tidings",
        redis_sharded: bool = False,
        limits: RestLimits | None = None,
        max_backend_events_per_second: int = 10000,
        cache_ttl: float = 1800.0,
        history: Sequence[HistoryRule | Mapping[str, Any]] = (),
    ) -> None:
        if not app_id:
            raise ValueError("a Redis client needs the app_id of the app it publishes to")
        check_prefix(redis_prefix)
        self._url = url
        self._app_id = app_id
        self._prefix = redis_prefix
        self._sharded = redis_sharded
        self._limits = limits or RestLimits()
        self._checker = TriggerChecker(self._limits)
        self._max_events = max_backend_events_per_second
        self._cache_ttl = cache_ttl
        self._history = history_rules(history)
        # Publications carry a node id so a node can skip its own; a client's is its own.
        self._origin = f"client-{secrets.token_hex(6)}"
        self._cluster: ClusterRedis | None = None
        self._store: HistoryStore | None = None
        self._queue: deque[_Queued] = deque()  # calls not yet written, in call order
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one start() ran on
        self._reads: asyncio.Semaphore | None = None  # made on that loop

    def __repr__(self) -> str:
        return f"RedisClient({public_url(self._url)!r}, app_id={self._app_id!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the Redis connection pool on the running loop (it is bound to it)."""
        if self._cluster is not None:
            return
        redis = connect(
            self._url,
            max_connections=POOL_SIZE,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        sharded = self._sharded or is_cluster_url(self._url)  # always sharded on a cluster
        self._cluster = ClusterRedis(redis, self._prefix, sharded)
        self._loop = asyncio.get_running_loop()
        self._reads = asyncio.Semaphore(MAX_READS)
        self._store = HistoryStore(self._cluster, self._origin)

    async def close(self) -> None:
        if self._sender is not None:
            # The calls already made go out (or fail, each answered) before the pool closes.
            await asyncio.shield(self._sender)
        cluster, self._cluster, self._store = self._cluster, None, None
        if cluster is not None:
            await close(cluster.redis)

    async def _redis(self) -> ClusterRedis:
        await self.start()
        assert self._cluster is not None
        return self._cluster

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """A Redis failure in the block becomes PublishError(503), its URL's password hidden."""
        try:
            yield
        except FAILURES as exc:
            reason = scrub(str(exc) or type(exc).__name__, self._url)
            raise PublishError(
                503,
                f"the cluster backend is unreachable ({public_url(self._url)}: {reason}): "
                "not done, retry later",
            ) from None

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """:meth:`_reachable` for a read, after waiting its turn for a pooled connection:
        a burst of reads (triggers asking for ``info``) waits instead of failing."""
        assert self._reads is not None  # made with the cluster
        async with self._reads:
            with self._reachable():
                yield

    # -- publishing --------------------------------------------------------------------------

    async def trigger(self, event: Event) -> dict[str, Any]:
        trigger = self._check(event)
        await self._publish([trigger])
        if not trigger.info:
            return {}
        return {"channels": {c: await self._attributes(c, trigger.info) for c in trigger.channels}}

    async def trigger_batch(self, events: Sequence[Event]) -> dict[str, Any]:
        if not events:
            raise PublishError(400, "batch must be a non-empty list")
        if len(events) > self._limits.max_batch_size:
            raise PublishError(400, f"more than {self._limits.max_batch_size} events in a batch")
        if any(len(e.channels) != 1 for e in events):
            raise PublishError(400, "every batch event has exactly one channel")
        triggers = [self._check(event) for event in events]
        await self._publish(triggers)
        if not any(t.info for t in triggers):
            return {}
        return {"batch": [await self._attributes(t.channels[0], t.info) for t in triggers]}

    async def trigger_many(self, events: Sequence[Event]) -> None:
        if any(len(e.channels) != 1 for e in events):
            raise PublishError(400, "every batch event has exactly one channel")
        await self._publish([self._check(event) for event in events])

    async def send_to_user(self, user_id: str, name: str, data: str) -> None:
        """An event on the user's ``#server-to-user-`` channel: every socket signed in as
        ``user_id``, on every node, gets it (Pusher's ``sendToUser``)."""
        await self.trigger(Event((USER_CHANNEL_PREFIX + user_id,), name, data))

    def queue_trigger(self, trigger: Trigger, answer: Answer) -> None:
        """On the client's loop, once started: queue a trigger that :meth:`check` passed and
        that asks for no ``info``, answered through ``answer`` as :meth:`trigger` would
        be (None when done): what ``Realtime.atrigger`` posts from other loops, with no
        task or coroutine per call."""
        cluster = self._cluster
        if cluster is None or self._loop is None:
            raise RuntimeError("the Redis client is not started")
        self._queue.append(([trigger], answer))
        if self._sender is None:
            self._sender = self._loop.create_task(self._send(cluster))

    def check(self, event: Event) -> Trigger:
        """``event`` checked as ``POST /events`` checks a body (PublishError if refused);
        pure, so any thread may call it."""
        return self._check(event)

    def _check(self, event: Event) -> Trigger:
        try:
            return self._checker.check(
                event.channels, event.name, event.data, event.socket_id, event.info
            )
        except RestError as exc:
            raise PublishError(exc.status, exc.message) from None

    async def _publish(self, triggers: list[Trigger]) -> None:
        """Count the events against the rate limit, then cache and publish them, in the
        order of the calls: queued for the one sender (``_send``), which writes calls one
        after the other, so that another call's commands cannot come in between.

        Refused events still count, as on a node (a client hammering the API keeps paying).
        """
        cluster = self._cluster
        if cluster is None:
            cluster = await self._redis()
        assert self._loop is not None  # set with the cluster
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.append((triggers, done))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(cluster))
        await done

    def _one_by_one(self, triggers: list[Trigger]) -> bool:
        """A cache channel (its SET), a channel with history (its own script) or sharded
        pub/sub (a script's SPUBLISH must stay in one slot) needs a command at a time."""
        return self._sharded or any(
            channel_type(c).cache or stored_under(self._history, c, t.name) is not None
            for t in triggers
            for c in t.channels
        )

    async def _send(self, cluster: ClusterRedis) -> None:
        """Write the queued calls in order: each run of calls with nothing cached or stored
        as one script call (each counted, then PUBLISHed unless over the limit: one
        command and one round trip for them all; the calls made while it is out make the
        next one), any other call on its own."""
        try:
            while self._queue:
                if self._one_by_one(self._queue[0][0]):
                    batch = [self._queue.popleft()]
                    await self._settle(batch, self._publish_one_by_one(cluster, batch[0][0]))
                    continue
                batch = []
                while (
                    self._queue
                    and len(batch) < MAX_PIPELINE
                    and not self._one_by_one(self._queue[0][0])
                ):
                    batch.append(self._queue.popleft())
                await self._settle(batch, self._count_and_publish(cluster, batch))
        finally:
            self._sender = None

    async def _settle(self, batch: list[_Queued], sending: Awaitable[list[int]]) -> None:
        """Answer each call of ``batch``: done, over the limit (429) or unreachable (503)."""
        try:
            with self._reachable():
                totals = await sending
        except PublishError as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(PublishError(exc.status, exc.message))
            return
        except BaseException as exc:  # cancelled with the loop: no caller waits forever
            for _, done in batch:
                if not done.done():
                    done.set_exception(PublishError(503, f"not done: {exc!r}"))
            raise
        for (_, done), total in zip(batch, totals, strict=True):
            if done.done():
                continue  # its caller was cancelled
            if total > self._max_events:
                done.set_exception(
                    PublishError(429, f"more than {self._max_events} events per second")
                )
            else:
                done.set_result(None)

    async def _count_and_publish(self, cluster: ClusterRedis, batch: list[_Queued]) -> list[int]:
        second = int(time.time())
        calls = [
            (
                second,
                len(triggers),
                [
                    (channel, messages.event(t.name, channel, t.data), t.socket_id)
                    for t in triggers
                    for channel in t.channels
                ],
            )
            for triggers, _ in batch
        ]
        return await cluster.count_and_publish(self._origin, self._app_id, self._max_events, calls)

    async def _publish_one_by_one(
        self, cluster: ClusterRedis, triggers: list[Trigger]
    ) -> list[int]:
        second = int(time.time())
        total = await cluster.count_backend_events(self._app_id, len(triggers), second)
        if total <= self._max_events:
            for trigger in triggers:
                for channel in trigger.channels:
                    await self._publish_one(cluster, trigger, channel)
        return [total]

    async def _publish_one(self, cluster: ClusterRedis, trigger: Trigger, channel: str) -> None:
        message = messages.event(trigger.name, channel, trigger.data)
        if channel_type(channel).cache:
            await cluster.cache_set(self._app_id, channel, message, self._cache_ttl)
        rule = stored_under(self._history, channel, trigger.name)
        if rule is None:
            await cluster.publish(self._origin, self._app_id, channel, message, trigger.socket_id)
            return
        assert self._store is not None  # made with the cluster
        await self._store.publish(
            self._app_id, channel, message, trigger.socket_id, size=rule.size, ttl=rule.ttl
        )

    async def terminate_user(self, user_id: str) -> None:
        """Every node closes the sockets signed in as ``user_id`` (the control message a
        node sends for ``POST /users/{id}/terminate_connections``)."""
        if not user_id:
            raise PublishError(400, "user id missing")
        cluster = await self._redis()
        async with self._reading():
            await cluster.control(self._origin, self._app_id, Terminate(user_id))

    # -- reading -----------------------------------------------------------------------------

    async def channels(self, prefix: str, info: Sequence[str]) -> dict[str, dict[str, Any]]:
        attributes = self._info(info)
        if "user_count" in attributes and not prefix.startswith("presence-"):
            raise PublishError(400, "info=user_count needs filter_by_prefix=presence-")
        cluster = await self._redis()
        async with self._reading():
            counts = await cluster.channels(self._app_id)
        result: dict[str, dict[str, Any]] = {}
        for name, count in sorted(counts.items()):
            if not name.startswith(prefix) or name.startswith(USER_CHANNEL_PREFIX):
                continue
            found: dict[str, Any] = {}
            if "user_count" in attributes and channel_type(name).is_presence:
                found["user_count"] = len(await self._members(name))
            if "subscription_count" in attributes:
                found["subscription_count"] = count
            result[name] = found
        return result

    async def channel(self, name: str, info: Sequence[str]) -> dict[str, Any]:
        self._check_name(name)
        attributes = self._info(info)
        ctype = channel_type(name)
        if "user_count" in attributes and not ctype.is_presence:
            raise PublishError(400, "user_count is available only for presence channels")
        if "cache" in attributes and not ctype.cache:
            raise PublishError(400, "cache is available only for cache channels")
        cluster = await self._redis()
        async with self._reading():
            count = await cluster.subscription_count(self._app_id, name)
            cached = await cluster.cache_get(self._app_id, name) if "cache" in attributes else None
        result: dict[str, Any] = {"occupied": count > 0}
        result.update(await self._attributes(name, attributes, count))
        if "cache" in attributes:
            if cached is not None:
                message = orjson.loads(cached[0])
                result["cache"] = {
                    "event": message.get("event"),
                    "data": message.get("data"),
                    "ttl": max(0, int(cached[1])),
                }
        return result

    async def users(self, channel: str) -> list[str]:
        self._check_name(channel)
        if not channel_type(channel).is_presence:
            raise PublishError(400, "users are available only for presence channels")
        return [member.user_id for member in await self._members(channel)]

    async def occupied(self, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have a subscriber on any node: one round trip."""
        cluster = await self._redis()
        async with self._reading():
            return await cluster.occupied(self._app_id, channels)

    async def _members(self, channel: str) -> list[Member]:
        cluster = await self._redis()
        async with self._reading():
            return await cluster.presence_members(self._app_id, channel)

    async def _attributes(
        self, channel: str, info: Sequence[str], count: int | None = None
    ) -> dict[str, Any]:
        """``user_count`` (presence channels) and ``subscription_count``, as REST gives them
        after a trigger (``info`` on ``POST /events``) and for one channel."""
        result: dict[str, Any] = {}
        if "user_count" in info and channel_type(channel).is_presence:
            result["user_count"] = len(await self._members(channel))
        if "subscription_count" in info:
            if count is None:
                cluster = await self._redis()
                async with self._reading():
                    count = await cluster.subscription_count(self._app_id, channel)
            result["subscription_count"] = count
        return result

    def _info(self, info: Sequence[str]) -> tuple[str, ...]:
        try:
            return parse_info(",".join(info))
        except RestError as exc:
            raise PublishError(exc.status, exc.message) from None

    def _check_name(self, name: str) -> None:
        problem = name_error(name, self._limits.max_channel_name_length)
        if problem is not None:
            raise PublishError(400, f"invalid channel: {problem}")
