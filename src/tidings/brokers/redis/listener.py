"""The node's one pub/sub connection: what it hears from the other nodes.

It subscribes to the control topic, the node's own topic and every channel this node has
subscribers for, resyncs the node's state (which ends an outage), then reads. Each message
is decoded by ``bus.py`` and handled on its own: one that is not what a node writes, or
whose handler raises, is dropped and counted (``bus``) and the listener reads on. When
Redis fails it reconnects with backoff; if the task dies anyway, the node is marked
degraded and a new listener started (which resyncs, as after an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio.client import PubSub

from tidings.brokers.bus import BusStats, Dropped
from tidings.brokers.redis.cluster import FAILURES
from tidings.brokers.redis.control_bus import RedisControlBus
from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.mirror import Mirror
from tidings.brokers.redis.pubsub import RedisPubSub
from tidings.brokers.redis.shards import ShardedPubSub
from tidings.tasks import spawn

log = logging.getLogger("tidings.redis")

RECONNECT_BACKOFF_MAX = 2.0
LISTENER_RESTART_DELAY = 0.5  # seconds before a listener that died is started again


class Listener:
    def __init__(
        self,
        link: RedisLink,
        mirror: Mirror,
        pubsub: RedisPubSub,
        control: RedisControlBus,
        resync: Callable[[], Awaitable[None]],
    ) -> None:
        self._link = link
        self._cluster = link.cluster
        self._mirror = mirror
        self._publications = pubsub
        self._control = control
        self._resync = resync
        self._pubsub: PubSub | ShardedPubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.bus = BusStats()  # dropped bus messages and listener restarts, for /metrics

    def start(self) -> None:
        self._task = spawn(self.listen_forever(), "redis listener")
        self._task.add_done_callback(self._ended)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            # A task that failed was logged when it ended (tasks.spawn): just stop.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await self._pubsub.aclose()

    async def listen(self, app_id: str, channel: str) -> None:
        """Hear ``channel``'s publications (its first local subscriber came)."""
        pubsub = self._pubsub
        if pubsub is None:
            return  # subscribed from the mirror on reconnect
        topic = self._cluster.topic(app_id, channel)
        await self._link.call(lambda: self._subscribe(pubsub, topic), lambda: None)

    async def unlisten(self, app_id: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        topic = self._cluster.topic(app_id, channel)
        if isinstance(pubsub, ShardedPubSub) or self._cluster.sharded:
            await self._link.call(lambda: pubsub.sunsubscribe(topic), lambda: None)
        else:
            await self._link.call(lambda: pubsub.unsubscribe(topic), lambda: None)

    async def _subscribe(self, pubsub: PubSub | ShardedPubSub, *topics: bytes) -> None:
        if isinstance(pubsub, ShardedPubSub) or self._cluster.sharded:
            await pubsub.ssubscribe(*topics)
        else:
            await pubsub.subscribe(*topics)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The listener only ends when the broker closes; if it died (spawn logged why),
        the node cannot hear other nodes: say so (degraded) and start a new one, which
        reconnects and resyncs as after an outage."""
        if self._closing or task is not self._task:
            return
        self.bus.listener_restarts += 1
        self._link.failed(RuntimeError("the redis listener stopped"))
        log.error("redis listener stopped; starting a new one")
        asyncio.get_running_loop().call_later(LISTENER_RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        if not self._closing:
            self.start()

    async def listen_forever(self) -> None:
        backoff = 0.1
        while not self._closing:
            try:
                pubsub = self._link.pubsub()
                self._pubsub = pubsub
                topics = [self._cluster.topic(app, ch) for (app, ch) in self._mirror.subs]
                await self._subscribe(
                    pubsub,
                    self._cluster.control_topic,
                    self._cluster.node_topic(self._link.node_id),
                    *topics,
                )
                await self._resync()
                backoff = 0.1
                await self._read(pubsub)
            except FAILURES as exc:
                self._link.failed(exc)
            except Exception as exc:  # a bug, or state in Redis no node wrote: retry anyway
                log.exception("redis listener failed; reconnecting")
                self._link.failed(exc)
            finally:
                if self._pubsub is not None:
                    with contextlib.suppress(*FAILURES):
                        await self._pubsub.aclose()
                    self._pubsub = None
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    async def _read(self, pubsub: PubSub | ShardedPubSub) -> None:
        control_topic = self._cluster.control_topic
        node_topic = self._cluster.node_topic(self._link.node_id)
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if self._link.resync_needed:
                raise ConnectionError("a command failed: reconnecting to resync")
            if message is None or message["type"] not in ("message", "smessage"):
                continue
            topic: bytes = message["channel"]
            data: bytes = message["data"]
            # One message per try: whatever it holds, the listener reads on.
            try:
                if topic == control_topic:
                    await self._control.received(data)
                elif topic == node_topic:
                    await self._control.node_message(data)
                else:
                    self._publications.received(topic, data)
            except Dropped as exc:
                self.bus.drop(exc.reason, topic, len(data), exc.detail)
            except Exception as exc:
                self.bus.drop("handler_error", topic, len(data), exc)
