"""The keys and bus of one Tidings cluster in one Redis (or one Redis Cluster), shared by
every writer.

Every key is hash-tagged so that each Lua script touches one Redis Cluster slot: a channel's
state is ``{prefix}:{<app>#<channel>}:…`` (subscribers, presence, cache, history), app-wide
state ``{prefix}:{<app>}:…`` (occupied channels, signed-in users, rates, connections), a
node's indexes ``{prefix}:node:{<id>}:…``. Topics are tagged the same way, so a sharded
publication from a script lands in the slot of the script's keys:
``{prefix}#{<app>#<channel>}`` (publications), ``{prefix}#{control}`` and
``{prefix}#node#{<id>}``. The nodes' broker and the publish-only
client (``tidings.clients.redis``) both go through :class:`ClusterRedis`, so the bus format
and the shared keys have one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources

import orjson
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from tidings.brokers.bus import encode_control, encode_publication
from tidings.brokers.control import ControlMessage
from tidings.protocol.session import Member

COMMAND_TIMEOUT = 2.0
FAILURES = (RedisError, OSError, asyncio.TimeoutError)
"""What redis-py raises when Redis cannot be reached or does not answer in time."""


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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

    def __init__(self, redis: aioredis.Redis | RedisCluster, prefix: str, sharded: bool) -> None:
        check_prefix(prefix)
        self.redis = redis
        self.prefix = prefix
        self.sharded = sharded
        lua = resources.files("tidings.brokers").joinpath("lua/count_and_publish.lua").read_text()
        self._count_and_publish = redis.register_script(lua)
        lua = resources.files("tidings.brokers").joinpath("lua/publish_many.lua").read_text()
        self._publish_many = redis.register_script(lua)

    def channel_key(self, app_id: str, channel: str, *parts: str) -> str:
        """A key of one channel's state, in the channel's slot (app ids and channel names
        hold no ``#``, ``{`` or ``}``: ``config.py`` and ``protocol/channels.py``)."""
        return ":".join((f"{self.prefix}:{{{app_id}#{channel}}}", *parts))

    def app_key(self, app_id: str, *parts: str) -> str:
        """A key of app-wide state, in the app's slot."""
        return ":".join((f"{self.prefix}:{{{app_id}}}", *parts))

    def topic(self, app_id: str, channel: str) -> bytes:
        """The channel's topic, in the slot of its keys (``history_publish.lua`` SPUBLISHes
        it from a script)."""
        return f"{self.prefix}#{{{app_id}#{channel}}}".encode()

    @staticmethod
    def topic_channel(topic: bytes) -> tuple[str, str]:
        """``(app id, channel)`` of a publication topic."""
        tag = topic[topic.index(b"{") + 1 : -1].decode()
        app_id, channel = tag.split("#", 1)
        return app_id, channel

    @property
    def control_topic(self) -> bytes:
        return f"{self.prefix}#{{control}}".encode()

    def node_topic(self, node_id: str) -> bytes:
        """Where payloads to one node go (``ControlBus.to_node``)."""
        return f"{self.prefix}#node#{{{node_id}}}".encode()

    def node_key(self, node_id: str, kind: str) -> str:
        """A node's index of what it added (``subs``, ``presence``, ``users``), for reaping;
        the three share the node's slot."""
        return f"{self.prefix}:node:{{{node_id}}}:{kind}"

    @property
    def nodes_key(self) -> str:
        """The live nodes and their heartbeat deadlines."""
        return f"{self.prefix}:nodes"

    def claim_key(self, key: str) -> str:
        return f"{self.prefix}:claim:{key}"

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

    async def publish_many(
        self, origin: str, publications: Sequence[tuple[str, str, bytes, str | None]]
    ) -> None:
        """Each (app, channel, message, exclude) of ``publications`` as :meth:`publish`
        does, in order, in one round trip: one script (one command to pack and one reply
        to parse), or with sharded pub/sub (a script's SPUBLISH must stay in one slot) a
        pipeline."""
        if not self.sharded:
            arguments: list[bytes] = []
            for app_id, channel, message, exclude in publications:
                arguments += [
                    self.topic(app_id, channel),
                    encode_publication(origin, exclude, message),
                ]
            await self._publish_many(args=arguments)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for app_id, channel, message, exclude in publications:
                pipe.spublish(
                    self.topic(app_id, channel), encode_publication(origin, exclude, message)
                )
            await pipe.execute()

    async def send(self, topic: bytes, payload: bytes) -> None:
        """``payload`` on ``topic``, sharded when the cluster's pub/sub is: control messages
        and node payloads go the way publications go (one slot each, never broadcast to
        every Redis Cluster shard)."""
        if self.sharded:
            await self.redis.spublish(topic, payload)
        else:
            await self.redis.publish(topic, payload)

    async def control(self, origin: str, app_id: str, message: ControlMessage) -> None:
        """``message`` to every node but ``origin``."""
        await self.send(self.control_topic, encode_control(origin, app_id, message))

    async def cache_set(self, app_id: str, channel: str, message: bytes, ttl: float) -> None:
        """The last event of a cache channel (the Pusher message), kept ``ttl`` seconds."""
        ttl_ms = max(1, int(ttl * 1000))
        await self.redis.set(self.channel_key(app_id, channel, "cache"), message, px=ttl_ms)

    async def cache_get(self, app_id: str, channel: str) -> tuple[bytes, float] | None:
        """The cached message and the seconds it has left, or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.channel_key(app_id, channel, "cache"))
            pipe.pttl(self.channel_key(app_id, channel, "cache"))
            message, ttl_ms = await pipe.execute()
        if message is None or ttl_ms is None or ttl_ms <= 0:
            return None
        return bytes(message), ttl_ms / 1000

    async def count_backend_events(self, app_id: str, events: int, second: int) -> int:
        """Add ``events`` to the cluster-wide count of ``second``; the new total."""
        key = self.app_key(app_id, "rate", str(second))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incrby(key, events)
            pipe.expire(key, 2)
            total, _ = await pipe.execute()
        return int(total)

    async def add_backend_events(self, counts: Sequence[tuple[str, int, int]]) -> list[int]:
        """Add each (app, second, events) of ``counts`` to the cluster-wide count of that
        second, in one round trip; the new totals, in the same order."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for app_id, second, events in counts:
                key = self.app_key(app_id, "rate", str(second))
                pipe.incrby(key, events)
                pipe.expire(key, 2)
            replies = await pipe.execute()
        return [int(total) for total in replies[::2]]

    async def count_and_publish(
        self,
        origin: str,
        app_id: str,
        limit: int,
        calls: Sequence[tuple[int, int, Sequence[tuple[str, bytes, str | None]]]],
    ) -> list[int]:
        """For each (second, events, publications) of ``calls``, in order: add ``events`` to
        the count of ``second`` (:meth:`count_backend_events`), then :meth:`publish` each of
        ``publications`` (channel, message, exclude) unless the new total is over ``limit``.
        All of them in one script call: one command to pack and one reply to parse for the
        lot, one round trip. Returns the totals. Not for sharded pub/sub (a script's
        SPUBLISH must stay in one slot): sharded callers count and publish one by one."""
        assert not isinstance(self.redis, RedisCluster)  # a cluster is always sharded
        keys: list[str] = []
        arguments: list[bytes | int] = [limit]
        for second, events, publications in calls:
            keys.append(self.app_key(app_id, "rate", str(second)))
            arguments += [events, len(publications)]
            for channel, message, exclude in publications:
                arguments += [
                    self.topic(app_id, channel),
                    encode_publication(origin, exclude, message),
                ]
        totals = await self._count_and_publish(keys=keys, args=arguments)
        return [int(total) for total in totals]

    async def subscription_count(self, app_id: str, channel: str) -> int:
        return int(await self.redis.scard(self.channel_key(app_id, channel, "subs")))

    async def channels(self, app_id: str) -> dict[str, int]:
        """Every channel with at least one subscriber, and its subscription count."""
        names = [text(n) for n in await self.redis.smembers(self.app_key(app_id, "channels"))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.channel_key(app_id, name, "subs"))
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
                pipe.exists(self.channel_key(app_id, name, "subs"))
            found = await pipe.execute()
        return {name for name, exists in zip(names, found, strict=True) if exists}

    async def presence_members(self, app_id: str, channel: str) -> list[Member]:
        members = await self.redis.hgetall(self.channel_key(app_id, channel, "members"))
        return [Member(text(k), orjson.loads(v)) for k, v in members.items()]
