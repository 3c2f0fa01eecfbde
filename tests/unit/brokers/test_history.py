"""The history stores themselves: what the contract suite (contract/test_history.py) cannot
reach through a broker. Epochs (a new memory store, a Redis that lost its data), the memory
store's bounds, the Redis keys' cluster slot, and the Lua script's bus encoding.
"""

from __future__ import annotations

import os

import pytest
from redis import asyncio as aioredis

from redis_server import RedisServer
from tidings.brokers.base import Deliver
from tidings.brokers.bus import encode_positioned
from tidings.brokers.history import META_TTL, Position
from tidings.brokers.memory_history import SWEEP_EVERY, MemoryHistory
from tidings.brokers.redis.cluster import ClusterRedis
from tidings.brokers.redis.history import HistoryStore

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP = "12345"


def event(n: int) -> bytes:
    return b'{"event":"e","channel":"c","data":"%d"}' % n


class Unstarted:
    """A broker's pub/sub before start: nowhere to deliver."""

    deliver: Deliver | None = None


async def test_a_new_memory_store_starts_a_new_epoch() -> None:
    first, second = MemoryHistory(Unstarted()), MemoryHistory(Unstarted())
    one = await first.publish(APP, "c", event(1), None, size=10, ttl=300)
    two = await second.publish(APP, "c", event(1), None, size=10, ttl=300)
    assert one.offset == two.offset == 1 and one.epoch != two.epoch


async def test_memory_keeps_at_most_max_channels_and_forgets_the_least_recent() -> None:
    now = [0.0]
    history = MemoryHistory(Unstarted(), clock=lambda: now[0], max_channels=3)
    for name in "abcd":
        await history.publish(APP, name, event(1), None, size=10, ttl=300)
    assert len(history) == 3
    forgotten = await history.since(APP, "a", 1, 10)  # a new epoch, at offset 0
    assert forgotten.position.offset == 0 and not forgotten.complete
    now[0] += META_TTL + 1
    assert (await history.position(APP, "d", ttl=300)).offset == 0  # the meta expired


async def test_memory_sweeps_expired_streams_and_metas_as_it_publishes() -> None:
    now = [0.0]
    history = MemoryHistory(Unstarted(), clock=lambda: now[0])
    await history.publish(APP, "quiet", event(1), None, size=10, ttl=1)
    now[0] += META_TTL + 2
    for n in range(SWEEP_EVERY):
        await history.publish(APP, "busy", event(n), None, size=10, ttl=300)
    assert len(history) == 1  # "quiet" went without being read again


async def test_redis_flushall_starts_a_new_epoch() -> None:
    with RedisServer() as server:  # FLUSHALL must not wipe what other tests keep in Redis
        redis = aioredis.Redis.from_url(server.url)
        try:
            store = HistoryStore(ClusterRedis(redis, "p", sharded=False), origin="n")
            before = await store.publish(APP, "c", event(1), None, size=10, ttl=300)
            await redis.flushall()
            lost = await store.since(APP, "c", before.offset, 10)
            assert lost.position.epoch != before.epoch and lost.position.offset == 0
            assert lost.complete is False  # offset 1 is above the new top
            after = await store.publish(APP, "c", event(2), None, size=10, ttl=300)
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
    store = HistoryStore(ClusterRedis(aioredis.Redis(), "p", sharded=False), origin="n")
    meta, stream = store.keys(app_id, "c-1")
    assert hash_tag(meta) == hash_tag(stream)
    assert store.keys(APP, "c-1") == ["p:{12345#c-1}:h", "p:{12345#c-1}:s"]


@pytest.mark.parametrize("sharded", [False, True])
async def test_the_lua_script_writes_the_bus_encoding_byte_for_byte(
    redis_server: RedisServer, redis_prefix: str, sharded: bool
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    cluster = ClusterRedis(redis, redis_prefix, sharded=sharded)
    store = HistoryStore(cluster, origin="node-a")
    topic = cluster.topic(APP, "c")
    try:
        async with redis.pubsub() as pubsub:
            await (pubsub.ssubscribe(topic) if sharded else pubsub.subscribe(topic))
            message = '{"event":"é","data":"\\u0000 \x00"}'.encode()
            position = await store.publish(APP, "c", message, "1.2", size=10, ttl=300)
            wanted = "smessage" if sharded else "message"
            item = None
            while item is None or item["type"] != wanted:
                item = await pubsub.get_message(timeout=TIMEOUT)
                assert item is not None, "no publication arrived"
            assert item["data"] == encode_positioned(position, "node-a", "1.2", message)
    finally:
        await redis.aclose()
