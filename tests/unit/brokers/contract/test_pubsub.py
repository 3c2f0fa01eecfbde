"""broker.pubsub (PubSub): every subscriber of the channel, on every node, gets each
publication once, in publish order per publishing node, byte for byte; the publisher's
``exclude`` socket does not; a node without subscribers hears nothing."""

from __future__ import annotations

import asyncio

import pytest

from broker_contract import (
    APP,
    ODD_MESSAGES,
    OTHER_APP,
    BrokerFactory,
    cluster,
    event_message,
    marker,
)
from tidings.brokers.control import Terminate


async def test_publish_delivered_once_with_exclude(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    await node.broker.pubsub.publish(APP, "c", event_message("one"), None)
    await node.broker.pubsub.publish(APP, "c", event_message("two"), "1.1")
    end = marker()
    await node.broker.pubsub.publish(APP, "c", end, None)
    await node.wait_frame(APP, "c", end)
    assert node.deliveries == [
        (APP, "c", event_message("one"), None),
        (APP, "c", event_message("two"), "1.1"),
        (APP, "c", end, None),
    ]


async def test_hundred_publishes_arrive_in_order(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    sent = [(event_message("e", str(i)), "1.1" if i % 3 else None) for i in range(100)]
    for frame, exclude in sent:
        await node.broker.pubsub.publish(APP, "c", frame, exclude)
    end = marker()
    await node.broker.pubsub.publish(APP, "c", end, None)
    await node.wait_frame(APP, "c", end)
    assert node.deliveries == [(APP, "c", f, x) for f, x in sent] + [(APP, "c", end, None)]


async def test_frames_and_names_arrive_byte_exact(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    channel = "private-a_b-c=d@e,f.g;h"
    await node.broker.subscriptions.subscribe(APP, channel, "123.456")
    for frame in ODD_MESSAGES:
        await node.broker.pubsub.publish(APP, channel, frame, "123.456")
    end = marker()
    await node.broker.pubsub.publish(APP, channel, end, None)
    await node.wait_frame(APP, channel, end)
    assert node.deliveries == [(APP, channel, f, "123.456") for f in ODD_MESSAGES] + [
        (APP, channel, end, None)
    ]


async def test_publish_keeps_apps_apart(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    await node.broker.subscriptions.subscribe(OTHER_APP, "c", "2.1")
    await node.broker.pubsub.publish(OTHER_APP, "c", event_message("other"), None)
    await node.broker.pubsub.publish(APP, "c", event_message("mine"), None)
    await node.wait_frame(APP, "c", event_message("mine"))
    await node.wait_frame(OTHER_APP, "c", event_message("other"))
    assert node.frames(APP, "c") == [event_message("mine")]
    assert node.frames(OTHER_APP, "c") == [event_message("other")]


@cluster
async def test_publish_reaches_other_node_once_and_own_node_once(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await a.broker.subscriptions.subscribe(APP, "c", "1.1")
    await b.broker.subscriptions.subscribe(APP, "c", "2.1")
    await a.broker.pubsub.publish(APP, "c", event_message("m1"), "1.1")
    end_a = marker()
    await a.broker.pubsub.publish(APP, "c", end_a, None)
    await b.wait_frame(APP, "c", end_a)
    # B answers after it has seen A's marker, so any echo of A's own publications back to A
    # reached A's subscriber connection before B's marker does.
    end_b = marker()
    await b.broker.pubsub.publish(APP, "c", end_b, None)
    await a.wait_frame(APP, "c", end_b)
    await b.wait_frame(APP, "c", end_b)
    m1 = event_message("m1")
    expected = [(APP, "c", m1, "1.1"), (APP, "c", end_a, None), (APP, "c", end_b, None)]
    assert a.deliveries == expected
    assert b.deliveries == expected


@cluster
@pytest.mark.parametrize("channel", ["c", "private-a_b-c=d@e,f.g;h", "#server-to-user-u1"])
async def test_frames_and_names_reach_another_node_byte_exact(
    make_broker: BrokerFactory, channel: str
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscriptions.subscribe(APP, channel, "2.1")
    for frame in ODD_MESSAGES:
        await a.broker.pubsub.publish(APP, channel, frame, "123.456")
    end = marker()
    await a.broker.pubsub.publish(APP, channel, end, None)
    await b.wait_frame(APP, channel, end)
    assert b.deliveries == [(APP, channel, f, "123.456") for f in ODD_MESSAGES] + [
        (APP, channel, end, None)
    ]


@cluster
async def test_hundred_publishes_arrive_in_order_on_another_node(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscriptions.subscribe(APP, "c", "2.1")
    sent = [(event_message("e", str(i)), "1.1" if i % 2 else None) for i in range(100)]
    for frame, exclude in sent:
        await a.broker.pubsub.publish(APP, "c", frame, exclude)
    end = marker()
    await a.broker.pubsub.publish(APP, "c", end, None)
    await b.wait_frame(APP, "c", end)
    assert b.deliveries == [(APP, "c", f, x) for f, x in sent] + [(APP, "c", end, None)]


@cluster
async def test_node_without_subscriber_gets_nothing(make_broker: BrokerFactory) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await a.broker.subscriptions.subscribe(APP, "c", "1.1")  # only A has a subscriber for "c"
    await b.broker.subscriptions.subscribe(APP, "d", "2.1")
    await a.broker.pubsub.publish(APP, "c", event_message("not-for-b"), None)
    await a.broker.pubsub.publish(
        OTHER_APP, "d", event_message("other-app"), None
    )  # same channel, other app
    end = marker()
    await a.broker.pubsub.publish(APP, "d", end, None)
    await b.wait_frame(APP, "d", end)
    assert b.deliveries == [(APP, "d", end, None)]
    await a.wait_frame(APP, "c", event_message("not-for-b"))


@cluster
async def test_node_stops_receiving_after_its_last_unsubscribe(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscriptions.subscribe(APP, "c", "2.1")
    await b.broker.subscriptions.subscribe(APP, "c", "2.2")
    await b.broker.subscriptions.subscribe(APP, "d", "2.1")
    await a.broker.pubsub.publish(APP, "c", event_message("before"), None)
    await b.wait_frame(APP, "c", event_message("before"))
    await b.broker.subscriptions.unsubscribe(APP, "c", "2.1")
    await a.broker.pubsub.publish(
        APP, "c", event_message("one-left"), None
    )  # B still has socket 2.2
    await b.wait_frame(APP, "c", event_message("one-left"))
    await b.broker.subscriptions.unsubscribe(APP, "c", "2.2")
    await a.broker.pubsub.publish(APP, "c", event_message("after"), None)
    end = marker()
    await a.broker.pubsub.publish(APP, "d", end, None)
    await b.wait_frame(APP, "d", end)
    assert b.frames(APP, "c") == [event_message("before"), event_message("one-left")]


@cluster
async def test_closed_node_receives_nothing(make_broker: BrokerFactory) -> None:
    a, b, c = await make_broker("a"), await make_broker("b"), await make_broker("c")
    await b.broker.subscriptions.subscribe(APP, "x", "2.1")
    await c.broker.subscriptions.subscribe(APP, "x", "3.1")
    await make_broker.close_node(b)
    await a.broker.pubsub.publish(APP, "x", event_message("after-close"), None)
    await a.broker.control.send(APP, Terminate("u1"))
    await c.wait_frame(APP, "x", event_message("after-close"))
    await c.wait_control(APP, Terminate("u1"))
    assert b.deliveries == []
    assert b.controls == []


@cluster
async def test_concurrent_publishes_reach_another_node_in_call_order(
    make_broker: BrokerFactory,
) -> None:
    """Publications made together (as concurrent REST requests make them) share pipelines;
    each channel's arrive on the other node in the order of the calls, every call answered."""
    a, b = await make_broker("a"), await make_broker("b")
    for channel in ("c", "d"):
        await b.broker.subscriptions.subscribe(APP, channel, "2.1")
    sent = [("c" if i % 2 else "d", event_message("e", str(i))) for i in range(300)]
    answers = await asyncio.gather(
        *(a.broker.pubsub.publish(APP, channel, frame, None) for channel, frame in sent)
    )
    assert answers == [True] * len(sent)
    ends = {channel: marker() for channel in ("c", "d")}
    for channel, end in ends.items():
        await a.broker.pubsub.publish(APP, channel, end, None)
        await b.wait_frame(APP, channel, end)
    for channel, end in ends.items():
        got = [frame for app, c, frame, _ in b.deliveries if c == channel]
        assert got == [frame for c, frame in sent if c == channel] + [end]
