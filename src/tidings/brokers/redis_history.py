"""Channel history in Redis: a meta hash and a stream per channel, changed by Lua.

Keys (hash-tagged per channel, so a script's keys share a Redis Cluster slot):
``{prefix}:{<app>#<channel>}:h`` holds the epoch (``e``) and the top offset (``s``) and
lives :data:`~tidings.brokers.history.META_TTL`; ``{prefix}:{<app>#<channel>}:s`` is a
stream whose entry ids are the offsets (``<offset>-0``), fields ``x`` (exclude, "" for
none) and ``m`` (the message), trimmed to ``size`` and dropped ``ttl`` after the last
publication.

``lua/history_publish.lua`` takes the offset, appends, trims, re-arms both TTLs and
PUBLISHes the positioned publication (brokers/bus.py) in one step, so every node sees
offsets in the order Redis assigned them, this one included: the publishing node is
delivered its own positioned publications by the bus, not ahead of it.

Every method raises what redis-py raises; the caller decides what an outage means.
"""

from __future__ import annotations

from importlib import resources

from redis import asyncio as aioredis

from tidings.brokers.history import META_TTL, HistoryPage, Position, Stored, page
from tidings.brokers.memory_history import new_epoch


def _script(name: str) -> str:
    return resources.files("tidings.brokers").joinpath(f"lua/{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisHistory:
    """:class:`~tidings.brokers.history.History` shared by every node on one Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str, sharded: bool, origin: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._sharded = sharded
        self._origin = origin
        self._publish = redis.register_script(_script("history_publish"))
        self._read = redis.register_script(_script("history_read"))

    def keys(self, app_id: str, channel: str) -> list[str]:
        """The channel's meta hash and stream."""
        tag = f"{self._prefix}:{{{app_id}#{channel}}}"
        return [f"{tag}:h", f"{tag}:s"]

    def topic(self, app_id: str, channel: str) -> str:
        # The pub/sub topic of the channel, as ClusterRedis.topic names it.
        return f"{self._prefix}#{app_id}#{channel}"

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
            self.topic(app_id, channel),
            1 if self._sharded else 0,
            self._origin,
            exclude or "",
            message,
        ]
        epoch, offset = await self._publish(keys=self.keys(app_id, channel), args=args)
        return Position(_text(epoch), int(offset))

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Position:
        return (await self._since(app_id, channel, 0, 0, ttl)).position

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> HistoryPage:
        return await self._since(app_id, channel, offset, limit, META_TTL)

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
        return page(Position(_text(epoch), int(top)), offset, events)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stored(entry_id: bytes, fields: list[bytes]) -> Stored:
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    exclude = values.get(b"x", b"")
    return Stored(int(entry_id.split(b"-", 1)[0]), bytes(values[b"m"]), exclude.decode() or None)
