"""The History contract (brokers/history.py), tested once per implementation.

Every case runs against ``MemoryHistory`` and against ``RedisHistory`` on a real
redis-server under its own key prefix. Deliveries through Redis come back on pub/sub, so
the Redis store's deliveries are read by a real subscriber and decoded by ``bus.py``, as a
node's listener would.

Expiry is made to happen rather than waited for: the memory store's clock is moved past the
ttl, and the Redis stream key is deleted after its TTL was checked to be armed (that is all
Redis expiry does).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
from redis import asyncio as aioredis

from redis_server import RedisServer
from tidings.brokers.bus import decode_publication, encode_positioned
from tidings.brokers.history import META_TTL, History, Position, Stored
from tidings.brokers.memory_history import MemoryHistory
from tidings.brokers.redis_history import RedisHistory

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP = "12345"


def event(n: int) -> bytes:
    return b'{"event":"e","channel":"c","data":"%d"}' % n


Delivered = tuple[str, str, bytes, str | None, Position | None]


class Store(Protocol):
    history: History
    deliveries: list[Delivered]

    async def expire_stream(self, channel: str) -> None: ...

    async def wait_deliveries(self, count: int) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.now = 1000.0
        self.deliveries: list[Delivered] = []
        self.history = MemoryHistory(
            lambda *delivered: self.deliveries.append(delivered), clock=lambda: self.now
        )
        self.ttl = 0.0

    async def expire_stream(self, channel: str) -> None:
        self.now += 301  # the tests' ttl is 300 s; the meta lives META_TTL

    async def wait_deliveries(self, count: int) -> None:
        assert len(self.deliveries) == count  # memory delivers before publish returns


class RedisStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.history = RedisHistory(redis, prefix, sharded=False, origin="node-a")
        self.deliveries: list[Delivered] = []
        self._arrived = asyncio.Condition()

    async def listen(self, ready: asyncio.Event) -> None:
        async with self.redis.pubsub() as pubsub:
            await pubsub.psubscribe(f"{self.prefix}#*")
            ready.set()
            async for item in pubsub.listen():
                if item["type"] != "pmessage":
                    continue
                _, app_id, channel = item["channel"].decode().split("#", 2)
                publication = decode_publication(item["data"])
                assert publication.origin == "node-a"
                async with self._arrived:
                    self.deliveries.append(
                        (
                            app_id,
                            channel,
                            publication.message,
                            publication.exclude,
                            publication.position,
                        )
                    )
                    self._arrived.notify_all()

    async def expire_stream(self, channel: str) -> None:
        meta, stream = self.history.keys(APP, channel)
        assert 0 < await self.redis.pttl(stream) <= 300_000
        assert await self.redis.pttl(meta) > 300_000
        await self.redis.delete(stream)

    async def wait_deliveries(self, count: int) -> None:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.deliveries) >= count), TIMEOUT
            )
        assert len(self.deliveries) == count


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = aioredis.Redis.from_url(server.url)
    redis_store = RedisStore(redis, request.getfixturevalue("redis_prefix"))
    ready = asyncio.Event()
    listener = asyncio.create_task(redis_store.listen(ready))
    await asyncio.wait_for(ready.wait(), TIMEOUT)
    try:
        yield redis_store
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await redis.aclose()


async def publish(store: Store, n: int, channel: str = "c", size: int = 10) -> Position:
    return await store.history.publish(APP, channel, event(n), None, size=size, ttl=300)


async def test_offsets_ascend_from_one_and_every_publication_is_delivered_with_its_position(
    store: Store,
) -> None:
    start = await store.history.position(APP, "c", ttl=300)
    assert start.offset == 0 and start.epoch
    positions = [await publish(store, n) for n in range(1, 4)]
    assert positions == [Position(start.epoch, n) for n in (1, 2, 3)]
    await store.history.publish(APP, "c", event(4), "1.2", size=10, ttl=300)
    await store.wait_deliveries(4)
    assert store.deliveries == [
        (APP, "c", event(n), "1.2" if n == 4 else None, Position(start.epoch, n))
        for n in range(1, 5)
    ]
    assert await store.history.position(APP, "c", ttl=300) == Position(start.epoch, 4)


async def test_since_returns_what_followed_in_order_with_exclude_kept(store: Store) -> None:
    await publish(store, 1)
    await store.history.publish(APP, "c", event(2), "7.7", size=10, ttl=300)
    top = await publish(store, 3)
    page = await store.history.since(APP, "c", 1, 100)
    assert page.position == top
    assert page.events == [Stored(2, event(2), "7.7"), Stored(3, event(3), None)]
    assert page.complete
    first_one = await store.history.since(APP, "c", 0, 1)
    assert first_one.events == [Stored(1, event(1), None)] and first_one.complete


async def test_since_at_the_top_is_complete_and_empty(store: Store) -> None:
    top = await publish(store, 1)
    page = await store.history.since(APP, "c", top.offset, 100)
    assert (page.position, page.events, page.complete) == (top, [], True)
    fresh = await store.history.since(APP, "never-published", 0, 100)
    assert (fresh.position.offset, fresh.events, fresh.complete) == (0, [], True)


async def test_an_offset_above_the_top_is_not_complete(store: Store) -> None:
    await publish(store, 1)
    page = await store.history.since(APP, "c", 5, 100)
    assert page.events == [] and not page.complete


async def test_the_stream_is_trimmed_to_size_and_asking_below_it_is_not_complete(
    store: Store,
) -> None:
    for n in range(1, 8):
        await publish(store, n, size=3)
    page = await store.history.since(APP, "c", 0, 100)
    assert [e.offset for e in page.events] == [5, 6, 7]
    assert not page.complete  # 1..4 were trimmed
    assert (await store.history.since(APP, "c", 4, 100)).complete
    assert (await store.history.since(APP, "c", 3, 100)).complete is False


async def test_expiry_drops_the_stream_but_keeps_the_position(store: Store) -> None:
    for n in range(1, 4):
        top = await publish(store, n)
    await store.expire_stream("c")
    assert await store.history.position(APP, "c", ttl=300) == top
    missed = await store.history.since(APP, "c", 2, 100)
    assert (missed.position, missed.events, missed.complete) == (top, [], False)
    # "expired but nothing new" still recovers (centrifugo#230)
    caught_up = await store.history.since(APP, "c", 3, 100)
    assert (caught_up.events, caught_up.complete) == ([], True)
    after = await publish(store, 4)
    assert after == Position(top.epoch, 4)
    assert (await store.history.since(APP, "c", 3, 100)).events == [Stored(4, event(4), None)]


async def test_channels_and_apps_have_streams_of_their_own(store: Store) -> None:
    a = await publish(store, 1, channel="a")
    b = await publish(store, 1, channel="b")
    other = await store.history.publish("other", "a", event(9), None, size=10, ttl=300)
    assert (a.offset, b.offset, other.offset) == (1, 1, 1)
    assert [e.message for e in (await store.history.since("other", "a", 0, 10)).events] == [
        event(9)
    ]


async def test_limit_bounds_a_page(store: Store) -> None:
    for n in range(1, 6):
        await publish(store, n)
    page = await store.history.since(APP, "c", 1, 2)
    assert [e.offset for e in page.events] == [2, 3] and page.complete
    assert (await store.history.since(APP, "c", 1, 0)).events == []


# --- epochs ------------------------------------------------------------------------------------


async def test_a_new_memory_store_starts_a_new_epoch() -> None:
    first = MemoryHistory(lambda *_: None)
    second = MemoryHistory(lambda *_: None)
    one = await first.publish(APP, "c", event(1), None, size=10, ttl=300)
    two = await second.publish(APP, "c", event(1), None, size=10, ttl=300)
    assert one.offset == two.offset == 1 and one.epoch != two.epoch


async def test_memory_keeps_at_most_max_channels_metas_and_forgets_the_oldest() -> None:
    now = [0.0]
    history = MemoryHistory(lambda *_: None, clock=lambda: now[0], max_channels=3)
    for name in "abcd":
        await history.publish(APP, name, event(1), None, size=10, ttl=300)
    assert len(history) == 3
    forgotten = await history.since(APP, "a", 1, 10)
    assert forgotten.position.offset == 0 and not forgotten.complete  # a new epoch, offset 0
    now[0] += META_TTL + 1
    assert (await history.position(APP, "d", ttl=300)).offset == 0  # the meta expired


async def test_redis_flushall_starts_a_new_epoch() -> None:
    with RedisServer() as server:  # FLUSHALL must not wipe what other tests keep in Redis
        redis = aioredis.Redis.from_url(server.url)
        try:
            history = RedisHistory(redis, "p", sharded=False, origin="n")
            before = await history.publish(APP, "c", event(1), None, size=10, ttl=300)
            await redis.flushall()
            lost = await history.since(APP, "c", before.offset, 10)
            assert lost.position.epoch != before.epoch and lost.position.offset == 0
            after = await history.publish(APP, "c", event(2), None, size=10, ttl=300)
            assert after == Position(lost.position.epoch, 1)
        finally:
            await redis.aclose()


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first ``{`` and the next ``}``."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


@pytest.mark.parametrize("app_id", [APP, "a}b", "{x"])
def test_redis_keys_of_a_channel_share_a_cluster_slot(app_id: str) -> None:
    history = RedisHistory(aioredis.Redis(), "p", sharded=False, origin="n")
    meta, stream = history.keys(app_id, "c-1")
    assert hash_tag(meta) == hash_tag(stream)
    assert history.keys(APP, "c-1") == ["p:{12345#c-1}:h", "p:{12345#c-1}:s"]


@pytest.mark.parametrize("sharded", [False, True])
async def test_the_lua_script_writes_the_bus_encoding_byte_for_byte(
    redis_server: RedisServer, redis_prefix: str, sharded: bool
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    history = RedisHistory(redis, redis_prefix, sharded=sharded, origin="node-a")
    topic = history.topic(APP, "c")
    try:
        async with redis.pubsub() as pubsub:
            await (pubsub.ssubscribe(topic) if sharded else pubsub.subscribe(topic))
            message = '{"event":"é","data":"\\u0000 \x00"}'.encode()
            position = await history.publish(APP, "c", message, "1.2", size=10, ttl=300)
            wanted = "smessage" if sharded else "message"
            item = None
            while item is None or item["type"] != wanted:
                item = await pubsub.get_message(timeout=TIMEOUT)
                assert item is not None, "no publication arrived"
            assert item["data"] == encode_positioned(position, "node-a", "1.2", message)
    finally:
        await redis.aclose()
