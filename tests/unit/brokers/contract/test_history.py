"""broker.history (History, brokers/history.py): a channel's publications get offsets
1, 2, 3... in one order, are delivered to every node (the publishing one included) with
their position, and are kept, trimmed to ``size``, until ``ttl`` after the last one; the
position (epoch, top offset) outlives them, so ``since`` tells a client that missed nothing
from one that cannot be given what it missed.

Expiry is made to happen rather than waited for: the memory broker's clock is moved past
the ttl; the Redis stream key is deleted once its TTL was checked to be armed (all that
Redis expiry does).
"""

from __future__ import annotations

import json

import pytest

from broker_contract import APP, OTHER_APP, BrokerFactory, Node, cluster, eventually
from tidings.brokers.history import HistoryUnavailable, Position, Stored
from tidings.brokers.redis import RedisBroker

TTL = 300.0


def event(n: int) -> bytes:
    return json.dumps({"event": "e", "channel": "c", "data": str(n)}).encode()


async def publish(
    node: Node, n: int, channel: str = "c", size: int = 10, exclude: str | None = None
) -> Position | None:
    return await node.broker.history.publish(APP, channel, event(n), exclude, size=size, ttl=TTL)


async def wait_deliveries(node: Node, count: int) -> None:
    # Memory delivers before publish returns; Redis delivers through the bus, the
    # publishing node included.
    await eventually(lambda: len(node.deliveries) >= count, f"{count} deliveries")
    assert len(node.deliveries) == count, node.deliveries


async def expire_stream(make_broker: BrokerFactory, node: Node, channel: str) -> None:
    if make_broker.kind == "memory":
        make_broker.now += TTL + 1
        return
    assert isinstance(node.broker, RedisBroker)
    redis = node.broker.link.redis
    meta, stream = node.broker.history.store.keys(APP, channel)
    assert 0 < await redis.pttl(stream) <= TTL * 1000
    assert await redis.pttl(meta) > TTL * 1000  # the position outlives the stream
    await redis.delete(stream)


async def test_offsets_ascend_and_every_publication_is_delivered_with_its_position(
    make_broker: BrokerFactory,
) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    start = await node.broker.history.position(APP, "c", ttl=TTL)
    assert start.offset == 0 and start.epoch
    positions = [await publish(node, n, exclude="1.2" if n == 2 else None) for n in (1, 2, 3)]
    assert positions == [Position(start.epoch, n) for n in (1, 2, 3)]
    await wait_deliveries(node, 3)
    assert node.deliveries == [(APP, "c", event(n), "1.2" if n == 2 else None) for n in (1, 2, 3)]
    assert node.positions == positions
    assert await node.broker.history.position(APP, "c", ttl=TTL) == Position(start.epoch, 3)


async def test_plain_publications_carry_no_position(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    await node.broker.pubsub.publish(APP, "c", event(0), None)
    await publish(node, 1)
    await wait_deliveries(node, 2)
    assert node.positions[0] is None and node.positions[1] is not None


async def test_since_returns_what_followed_in_order_with_exclude_kept(
    make_broker: BrokerFactory,
) -> None:
    history = (node := await make_broker()).broker.history
    await publish(node, 1)
    await publish(node, 2, exclude="7.7")
    top = await publish(node, 3)
    page = await history.since(APP, "c", 1, 100)
    assert page.position == top
    assert page.events == [Stored(2, event(2), "7.7"), Stored(3, event(3), None)]
    assert page.complete
    first = await history.since(APP, "c", 0, 1)
    assert (first.events, first.complete) == ([Stored(1, event(1), None)], True)


async def test_since_at_the_top_is_complete_and_empty(make_broker: BrokerFactory) -> None:
    history = (node := await make_broker()).broker.history
    top = await publish(node, 1)
    page = await history.since(APP, "c", 1, 100)
    assert (page.position, page.events, page.complete) == (top, [], True)
    fresh = await history.since(APP, "never-published", 0, 100)
    assert (fresh.position.offset, fresh.events, fresh.complete) == (0, [], True)
    # An offset above the top comes from another epoch's stream: never complete.
    assert (await history.since(APP, "c", 5, 100)).complete is False


async def test_the_stream_is_trimmed_to_size(make_broker: BrokerFactory) -> None:
    history = (node := await make_broker()).broker.history
    for n in range(1, 8):
        await publish(node, n, size=3)
    page = await history.since(APP, "c", 0, 100)
    assert [e.offset for e in page.events] == [5, 6, 7]
    assert page.complete is False  # 1 to 4 were trimmed
    assert (await history.since(APP, "c", 4, 100)).complete is True
    assert (await history.since(APP, "c", 3, 100)).complete is False


async def test_limit_bounds_a_page(make_broker: BrokerFactory) -> None:
    history = (node := await make_broker()).broker.history
    for n in range(1, 6):
        await publish(node, n)
    page = await history.since(APP, "c", 1, 2)
    assert ([e.offset for e in page.events], page.complete) == ([2, 3], True)


async def test_expiry_drops_the_events_but_keeps_the_position(make_broker: BrokerFactory) -> None:
    history = (node := await make_broker()).broker.history
    for n in range(1, 4):
        top = await publish(node, n)
    await expire_stream(make_broker, node, "c")
    assert await history.position(APP, "c", ttl=TTL) == top
    missed = await history.since(APP, "c", 2, 100)
    assert (missed.position, missed.events, missed.complete) == (top, [], False)
    # "expired, but nothing new": a client that saw everything still recovers
    caught_up = await history.since(APP, "c", 3, 100)
    assert (caught_up.events, caught_up.complete) == ([], True)
    assert top is not None
    assert await publish(node, 4) == Position(top.epoch, 4)
    assert (await history.since(APP, "c", 3, 100)).events == [Stored(4, event(4), None)]


async def test_channels_and_apps_have_streams_of_their_own(make_broker: BrokerFactory) -> None:
    history = (node := await make_broker()).broker.history
    a, b = await publish(node, 1, channel="a"), await publish(node, 2, channel="b")
    other = await history.publish(OTHER_APP, "a", event(9), None, size=10, ttl=TTL)
    assert (a and a.offset, b and b.offset, other and other.offset) == (1, 1, 1)
    page = await history.since(OTHER_APP, "a", 0, 10)
    assert page.events == [Stored(1, event(9), None)]


@cluster
async def test_every_node_gets_one_order_of_offsets(make_broker: BrokerFactory) -> None:
    one, two = await make_broker("one"), await make_broker("two")
    for node in (one, two):
        await node.broker.subscriptions.subscribe(APP, "c", f"{node.name}.1")
    for n in range(1, 21):  # both nodes publish, interleaved
        await publish(one if n % 2 else two, n)
    for node in (one, two):
        await wait_deliveries(node, 20)
        offsets = [p.offset for p in node.positions if p is not None]
        assert offsets == list(range(1, 21)), (node.name, offsets)
        assert [d[2] for d in node.deliveries] == [event(n) for n in range(1, 21)]
    assert one.positions == two.positions
    assert len({p.epoch for p in one.positions if p is not None}) == 1


async def test_positions_reads_many_channels_at_once_and_creates_nothing(
    make_broker: BrokerFactory,
) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    await publish(node, 1)
    top = await publish(node, 2)
    quiet = await node.broker.history.position(APP, "quiet", ttl=TTL)
    history = node.broker.history
    assert await history.positions(APP, ["c", "never", "quiet"]) == [top, None, quiet]
    assert await history.positions(APP, ["never"]) == [None]  # still none: read only
    assert await history.positions(OTHER_APP, ["c"]) == [None]
    assert await history.positions(APP, []) == []


async def test_alone_history_publishes_locally(make_alone: BrokerFactory) -> None:
    node = await make_alone()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    position = await publish(node, 1, exclude="2.2")
    assert node.deliveries == [(APP, "c", event(1), "2.2")]  # before publish returned
    if make_alone.kind == "memory":
        assert position is not None and node.positions == [position]
        assert (await node.broker.history.since(APP, "c", 0, 10)).complete
        return
    # Degraded: delivered here without a position, kept nowhere, and not readable.
    assert position is None and node.positions == [None]
    with pytest.raises(HistoryUnavailable):
        await node.broker.history.since(APP, "c", 0, 10)
    with pytest.raises(HistoryUnavailable):
        await node.broker.history.position(APP, "c", ttl=TTL)
    with pytest.raises(HistoryUnavailable):
        await node.broker.history.positions(APP, ["c"])
