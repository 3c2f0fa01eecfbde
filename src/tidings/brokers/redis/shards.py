"""Sharded pub/sub on a Redis Cluster: one connection per shard, read without polling.

SSUBSCRIBE must reach the master that owns the topic's slot. :class:`ShardedPubSub` keeps
one pub/sub connection per such master, each read by its own task into one bounded queue,
and answers ``get_message`` from that queue: the listener (``listener.py``) reads it as it
reads a single Redis's ``PubSub``. A failure of any shard's connection (a master gone, a
slot moved) is raised from ``get_message``: the listener then reconnects everything with
a fresh slot map and resyncs, as after any outage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from tidings.brokers.redis.cluster import FAILURES
from tidings.tasks import spawn

QUEUE_SIZE = 10_000  # messages read but not yet handled; a full queue pauses the readers
READ_TIMEOUT = 1.0  # a shard's reader wakes this often (its socket times out after 2 s)

Message = dict[str, Any]


class ShardedPubSub:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._shards: dict[str, PubSub] = {}  # master name -> its pub/sub connection
        self._clients: list[aioredis.Redis] = []
        self._readers: dict[str, asyncio.Task[None]] = {}  # master name -> its reader
        self._owners: dict[bytes, str] = {}  # topic -> the master it was subscribed on
        self._queue: asyncio.Queue[Message | BaseException] = asyncio.Queue(QUEUE_SIZE)

    async def ssubscribe(self, *topics: bytes) -> None:
        if self._cluster._initialize:  # noqa: SLF001  (redis-py connects lazily)
            await self._cluster.initialize()
        elif not self._shards:
            # A new connection after a failure: the master that failed may have been
            # replaced (a promoted replica), which only a fresh slot map knows.
            await self._cluster.nodes_manager.initialize()
        # One SSUBSCRIBE names channels of one slot (Redis answers CROSSSLOT otherwise).
        by_slot: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for topic in topics:
            node = self._cluster.get_node_from_key(topic.decode())
            if node is None:
                raise ConnectionError(f"no Redis Cluster master serves {topic!r}")
            by_slot[(node.name, self._cluster.keyslot(topic))].append(topic)
            self._owners[topic] = node.name
        for (name, _), some in by_slot.items():
            pubsub = await self._shard(name)
            await pubsub.ssubscribe(*some)
            if name not in self._readers:  # read once subscribed: there is a connection
                self._readers[name] = spawn(self._read(pubsub), "redis shard reader")

    async def sunsubscribe(self, *topics: bytes) -> None:
        by_slot: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for topic in topics:
            name = self._owners.pop(topic, None)
            if name is not None:
                by_slot[(name, self._cluster.keyslot(topic))].append(topic)
        for (name, _), some in by_slot.items():
            await self._shards[name].sunsubscribe(*some)

    async def get_message(self, timeout: float) -> Message | None:
        """The next message of any shard, None after ``timeout`` seconds without one;
        raises the failure of a shard's connection.

        A message already queued is returned without yielding to the event loop (``wait_for``
        runs its awaitable as a task, one loop tick per message): the messages one read
        brought in are then handled in one tick, and the node's Coalescer writes them to
        each socket together, as it does for a single Redis's connection."""
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pubsub in self._shards.values():
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()
        for client in self._clients:
            with contextlib.suppress(*FAILURES):
                await client.aclose(close_connection_pool=True)
        self._shards.clear()

    async def _shard(self, name: str) -> PubSub:
        pubsub = self._shards.get(name)
        if pubsub is not None:
            return pubsub
        node = self._cluster.get_node(node_name=name)
        if node is None:
            raise ConnectionError(f"no Redis Cluster master {name}")
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
        )
        client = aioredis.Redis(connection_pool=pool)
        self._clients.append(client)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._shards[name] = pubsub
        return pubsub

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
                if message is not None:
                    await self._queue.put(message)
        except FAILURES as exc:
            await self._queue.put(exc)
