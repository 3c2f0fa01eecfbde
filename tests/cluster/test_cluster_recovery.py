"""Recovery across nodes: a client whose node is killed reconnects to another node and gets
every event it missed, once and in order (docs/recovery.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, SocketOpener, scrape, unique, value
from recovery_helpers import Follower, Publisher, assert_exactly_once_in_order, trigger
from redis import Redis

from redis_server import RedisServer

pytestmark = pytest.mark.timeout(20 * TIMEOUT)

ClusterFactory = Callable[..., list[Any]]

APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "history": [{"pattern": "hist-*", "size": 500, "ttl": 300}],
    }
]


async def test_kill_9_of_the_clients_node_then_recovery_on_another(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    first, second = make_cluster(2, apps=APPS)
    channel = unique("hist-cluster")
    follower = Follower(open_socket, first.ws_url, channel)
    await follower.subscribe()
    publisher = Publisher(second.http_url, channel, rate=50)  # published on the survivor
    publisher.start()
    try:
        await follower.read_until_offset(10)
        first.kill()  # SIGKILL: the client's connection dies with its node
        await follower.read_for(0.5)  # whatever was in flight, then the close
        follower.ws_url = second.ws_url
        data = await follower.subscribe(recover=True)
        assert data["recovered"] is True, data
        await follower.read_until_offset(follower.offset + 20)  # type: ignore[operator]
    finally:
        sent = await publisher.stop()
    await follower.read_until_offset(sent)
    assert follower.unrecovered == []
    assert_exactly_once_in_order(follower.offsets, 1, sent)


async def test_messages_a_node_missed_on_pubsub_are_filled_from_history(
    make_cluster: ClusterFactory, open_socket: SocketOpener, own_redis: RedisServer
) -> None:
    """Redis pub/sub is at most once: the node whose subscriber connection is killed misses
    what is published until it is back, and fills the hole from the stream before the
    next event goes out, to stock and opted-in sockets alike."""
    first, second = make_cluster(2, apps=APPS, redis_url=own_redis.url)
    channel = unique("hist-gap")
    follower = Follower(open_socket, first.ws_url, channel)
    await follower.subscribe()
    stock = await open_socket(first.ws_url)
    await stock.subscribe(channel)
    publisher = Publisher(second.http_url, channel, rate=50)  # the other node publishes
    publisher.start()
    try:
        await follower.read_until_offset(5)
        await asyncio.to_thread(kill_pubsub_connection, own_redis.url)
        await follower.read_until_offset(follower.offset + 50)  # type: ignore[operator]
    finally:
        sent = await publisher.stop()
    await follower.read_until_offset(sent)
    assert_exactly_once_in_order(follower.offsets, 1, sent)
    datas = [(await stock.expect("tick", channel))["data"] for _ in range(sent)]
    assert datas == [str(n) for n in range(1, sent + 1)]
    _, samples = await asyncio.to_thread(scrape, first.http_url)
    assert value(samples, "tidings_history_gaps_filled_total", app=APP_ID) >= 1


async def test_a_lost_last_publication_arrives_with_no_publication_after_it(
    make_cluster: ClusterFactory, open_socket: SocketOpener, own_redis: RedisServer
) -> None:
    """A publication lost on pub/sub with none after it shows no jump: the node's periodic
    position check finds the channel's top past what it delivered and fills it. Killing
    the node's pub/sub connection right before a publication loses it (the node waits
    0.1 s before reconnecting); if the race is lost the event just arrives live, and the
    kill is tried again, until one was filled."""
    first, second = make_cluster(2, apps=APPS, redis_url=own_redis.url, history_check_interval=0.5)
    channel = unique("hist-last")
    follower = Follower(open_socket, first.ws_url, channel)
    await follower.subscribe()
    stock = await open_socket(first.ws_url)
    await stock.subscribe(channel)
    await asyncio.to_thread(trigger, second.http_url, channel, "tick", "1")
    await follower.read_until_offset(1)
    sent, filled = 1, 0.0
    while not filled and sent <= 5:
        await asyncio.to_thread(kill_pubsub_connection, own_redis.url)
        sent += 1
        await asyncio.to_thread(trigger, second.http_url, channel, "tick", str(sent))
        await follower.read_until_offset(sent)  # never, were nothing to check the position
        _, samples = await asyncio.to_thread(scrape, first.http_url)
        filled = value(samples, "tidings_history_gaps_filled_total", app=APP_ID)
    assert filled >= 1, f"no publication was lost in {sent - 1} tries"
    assert_exactly_once_in_order(follower.offsets, 1, sent)
    datas = [(await stock.expect("tick", channel))["data"] for _ in range(sent)]
    assert datas == [str(n) for n in range(1, sent + 1)]


def kill_pubsub_connection(redis_url: str) -> None:
    """Kill the pub/sub connection that listens to the most topics: the node with
    subscribers (the other one listens to its control topics only)."""
    with Redis.from_url(redis_url) as redis:
        clients = [c for c in redis.client_list() if int(c.get("sub", 0)) > 0]
        clients.sort(key=lambda c: int(c["sub"]), reverse=True)
        assert clients and (len(clients) == 1 or clients[0]["sub"] != clients[1]["sub"])
        redis.client_kill_filter(_id=clients[0]["id"])
