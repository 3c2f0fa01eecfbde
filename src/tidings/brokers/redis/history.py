"""Channel history in Redis: a meta hash and a stream per channel, changed by Lua.

Keys (hash-tagged per channel, so that a script's keys share a Redis Cluster slot):
``{prefix}:{<app>#<channel>}:h`` holds the epoch (``e``) and the top offset (``s``) and
lives :data:`~tidings.brokers.history.META_TTL`; ``{prefix}:{<app>#<channel>}:s`` is a
stream whose entry ids are the offsets (``<offset>-0``), fields ``x`` (exclude, "" for
none) and ``m`` (the message), trimmed to ``size`` and dropped ``ttl`` after the last
publication.

``lua/history_publish.lua`` takes the offset, appends, trims, re-arms both TTLs and
PUBLISHes the positioned publication (``bus.py``) in one step, so every node hears a
channel's offsets in the order Redis assigned them. The publishing node included: it is
delivered its own positioned publications by the bus, never ahead of it, so its
subscribers see the same order as everyone else's.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import NoReturn

from tidings.brokers.history import (
    META_TTL,
    HistoryPage,
    HistoryUnavailable,
    Position,
    Stored,
    new_epoch,
    page,
)
from tidings.brokers.redis.cluster import ClusterRedis, text
from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.pubsub import RedisPubSub


def _script(name: str) -> str:
    return resources.files("tidings.brokers").joinpath(f"lua/{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class HistoryStore:
    """The history scripts of one cluster. Methods raise what redis-py raises."""

    def __init__(self, cluster: ClusterRedis, origin: str) -> None:
        self._cluster = cluster
        self._origin = origin
        self._publish = cluster.redis.register_script(_script("history_publish"))
        self._read = cluster.redis.register_script(_script("history_read"))

    def keys(self, app_id: str, channel: str) -> list[str]:
        """The channel's meta hash and stream."""
        key = self._cluster.channel_key
        return [key(app_id, channel, "h"), key(app_id, channel, "s")]

    async def publish(
        self,
        app_id: str,
        channel: str,
        message: bytes,
        exclude: str | None,
        *,
        size: int,
        ttl: float,
    ) -> Position:
        args: list[str | int | bytes] = [
            new_epoch(),
            size,
            _ms(ttl),
            _ms(max(META_TTL, ttl)),
            self._cluster.topic(app_id, channel),
            1 if self._cluster.sharded else 0,
            self._origin,
            exclude or "",
            message,
        ]
        epoch, offset = await self._publish(keys=self.keys(app_id, channel), args=args)
        return Position(text(epoch), int(offset))

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Position:
        return (await self._since(app_id, channel, 0, 0, ttl)).position

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> HistoryPage:
        return await self._since(app_id, channel, offset, limit, META_TTL)

    async def positions(self, app_id: str, channels: Sequence[str]) -> list[Position | None]:
        """HMGET of each channel's meta, pipelined (a cluster pipeline splits it by slot)."""
        if not channels:
            return []
        async with self._cluster.redis.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.hmget(self.keys(app_id, channel)[0], ["e", "s"])
            replies = await pipe.execute()
        return [
            Position(text(epoch), int(top)) if epoch is not None and top is not None else None
            for epoch, top in replies
        ]

    async def _since(
        self, app_id: str, channel: str, offset: int, limit: int, ttl: float
    ) -> HistoryPage:
        args: list[str | int] = [
            new_epoch(),
            _ms(max(META_TTL, ttl)),
            max(0, offset) + 1,
            max(0, limit),
        ]
        epoch, top, entries = await self._read(keys=self.keys(app_id, channel), args=args)
        events = [_stored(entry_id, fields) for entry_id, fields in entries]
        return page(Position(text(epoch), int(top)), offset, events)


class RedisHistory:
    """:class:`~tidings.brokers.history.History` for a node: the store, through the link
    (degraded mode: see the History docstring)."""

    def __init__(self, link: RedisLink, pubsub: RedisPubSub) -> None:
        self._link = link
        self._pubsub = pubsub
        self.store = HistoryStore(link.cluster, link.node_id)

    async def publish(
        self,
        app_id: str,
        channel: str,
        message: bytes,
        exclude: str | None,
        *,
        size: int,
        ttl: float,
    ) -> Position | None:
        async def kept() -> Position | None:
            return await self.store.publish(app_id, channel, message, exclude, size=size, ttl=ttl)

        def local_only() -> Position | None:
            # As pub/sub does in an outage: this node's subscribers still get it.
            deliver = self._pubsub.deliver
            if deliver is not None:
                deliver(app_id, channel, message, exclude, None)
            return None

        return await self._link.call(kept, local_only)

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Position:
        return await self._link.call(
            lambda: self.store.position(app_id, channel, ttl=ttl), _unavailable
        )

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> HistoryPage:
        return await self._link.call(
            lambda: self.store.since(app_id, channel, offset, limit), _unavailable
        )

    async def positions(self, app_id: str, channels: Sequence[str]) -> list[Position | None]:
        return await self._link.call(lambda: self.store.positions(app_id, channels), _unavailable)


def _unavailable() -> NoReturn:
    raise HistoryUnavailable("the channel history is unreachable (redis)")


def _stored(entry_id: bytes, fields: list[bytes]) -> Stored:
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    exclude = values.get(b"x", b"")
    return Stored(int(entry_id.split(b"-", 1)[0]), bytes(values[b"m"]), exclude.decode() or None)
