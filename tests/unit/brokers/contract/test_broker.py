"""The broker itself: identity, prefixes that keep clusters apart, what the cluster undoes
when a node closes or dies, and a bus that garbage cannot deafen."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from broker_contract import (
    APP,
    TIMEOUT,
    BrokerFactory,
    by_user,
    cluster,
    event_message,
    marker,
)
from tidings.brokers.control import MemberRemoved, Recount, Terminate, UserOffline
from tidings.protocol.session import Member


async def test_identity_after_start(make_broker: BrokerFactory) -> None:
    node = await make_broker("a")
    assert isinstance(node.broker.node_id, str) and node.broker.node_id
    if make_broker.kind != "memory":
        assert node.broker.node_id == f"{make_broker.prefix}-a"
    assert node.broker.degraded is False


@cluster
async def test_nodes_with_another_prefix_share_nothing(make_broker: BrokerFactory) -> None:
    a = await make_broker("a")
    elsewhere = await make_broker("b", prefix=f"{make_broker.prefix}x")
    await a.broker.subscriptions.subscribe(APP, "c", "1.1")
    await elsewhere.broker.subscriptions.subscribe(APP, "c", "2.1")
    await elsewhere.broker.subscriptions.subscribe(APP, "d", "2.1")
    assert await a.broker.subscriptions.count(APP, "c") == 1
    assert await elsewhere.broker.subscriptions.channels(APP) == {"c": 1, "d": 1}
    await a.broker.presence.join(APP, "presence-p", "1.1", Member("u1"), 1)
    joined = await elsewhere.broker.presence.join(APP, "presence-p", "2.1", Member("u2"), 1)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [Member("u2")])
    assert await a.broker.presence.user_online(APP, "u1", "1.1") is True
    assert await elsewhere.broker.presence.user_online(APP, "u1", "2.1") is True
    await a.broker.pubsub.publish(APP, "c", event_message("not-for-elsewhere"), None)
    await a.broker.control.send(APP, Terminate("u1"))
    # Markers through Redis from a neighbour of "elsewhere", sent after A's were executed.
    neighbour = await make_broker("c", prefix=f"{make_broker.prefix}x")
    end = marker()
    await neighbour.broker.pubsub.publish(APP, "d", end, None)
    await neighbour.broker.control.send(APP, UserOffline("end"))
    await elsewhere.wait_frame(APP, "d", end)
    await elsewhere.wait_control(APP, UserOffline("end"))
    assert elsewhere.deliveries == [(APP, "d", end, None)]
    assert elsewhere.controls == [(APP, UserOffline("end"))]


@cluster
async def test_clean_close_removes_the_nodes_sockets_cluster_wide(
    make_broker: BrokerFactory,
) -> None:
    a, b, c = await make_broker("a"), await make_broker("b"), await make_broker("c")
    for node, socket_id, user in ((a, "1.1", "u1"), (b, "2.1", "u2"), (c, "3.1", "u3")):
        await node.broker.subscriptions.subscribe(APP, "presence-p", socket_id)
        await node.broker.presence.join(APP, "presence-p", socket_id, Member(user), 10)
        await node.broker.presence.user_online(APP, user, socket_id)
    await make_broker.close_node(c)
    removed = (APP, MemberRemoved("presence-p", "u3"))
    recount = (APP, Recount("presence-p"))
    for node in (a, b):
        await node.wait_control(*removed)
        await node.wait_control(APP, UserOffline("u3"))
        await node.wait_control(*recount)
    end = (APP, Terminate("end-marker"))
    await a.broker.control.send(*end)
    await b.wait_control(*end)
    for node in (a, b):
        assert node.controls.count(removed) == 1, node.controls
        assert node.controls.count(recount) == 1, node.controls
    assert await a.broker.subscriptions.count(APP, "presence-p") == 2
    assert by_user(await b.broker.presence.members(APP, "presence-p")) == [
        Member("u1"),
        Member("u2"),
    ]
    assert sorted(await a.broker.presence.users_online(APP, ["u1", "u2", "u3"])) == ["u1", "u2"]


DEAD_NODE = """
import asyncio, sys
from tidings.brokers.redis import RedisBroker
from tidings.protocol.session import Member

async def main() -> None:
    url, prefix, app = sys.argv[1:4]
    broker = RedisBroker(url, prefix=prefix, node_id=prefix + "-dead", node_ttl=60.0)
    await broker.start(lambda *args: None, lambda *args: None)
    await broker.subscriptions.subscribe(app, "presence-p", "9.1")
    await broker.presence.join(app, "presence-p", "9.1", Member("u9"), 10)
    await broker.presence.user_online(app, "u9", "9.1")
    print("ready", broker.degraded, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@cluster
async def test_survivors_reap_a_node_that_stopped_heartbeating(
    make_broker: BrokerFactory,
) -> None:
    node_ttl = 0.4 * TIMEOUT
    a = await make_broker("a", node_ttl=node_ttl)
    b = await make_broker("b", node_ttl=node_ttl)
    await a.broker.subscriptions.subscribe(APP, "presence-p", "1.1")
    await a.broker.presence.join(APP, "presence-p", "1.1", Member("u1"), 10)
    await b.broker.subscriptions.subscribe(APP, "presence-p", "2.1")
    assert make_broker.redis_url is not None
    dead = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEAD_NODE,
        make_broker.redis_url,
        make_broker.prefix,
        APP,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert dead.stdout is not None
        line = await asyncio.wait_for(dead.stdout.readline(), 4 * TIMEOUT)
        assert line == b"ready False\n"
        assert await a.broker.subscriptions.count(APP, "presence-p") == 3
        assert await b.broker.presence.users_online(APP, ["u9"]) == ["u9"]
    finally:
        dead.send_signal(signal.SIGKILL)  # no clean close: only the heartbeat stops
        await dead.wait()
    removed = (APP, MemberRemoved("presence-p", "u9"))
    deadline = time.monotonic() + node_ttl + 2 * TIMEOUT
    for node in (a, b):
        while removed not in node.controls:
            assert time.monotonic() < deadline, f"no member_removed on {node.name}"
            await asyncio.sleep(0.05)
        await node.wait_control(APP, UserOffline("u9"))
        await node.wait_control(APP, Recount("presence-p"))
    end = (APP, Terminate("end-marker"))
    await a.broker.control.send(*end)
    await b.wait_control(*end)
    for node in (a, b):
        assert node.controls.count(removed) == 1, node.controls
    assert await b.broker.subscriptions.count(APP, "presence-p") == 2
    assert await b.broker.presence.members(APP, "presence-p") == [Member("u1")]
    assert await a.broker.presence.users_online(APP, ["u9"]) == []


@cluster
async def test_garbage_on_the_bus_is_dropped_and_counted_and_delivery_goes_on(
    make_broker: BrokerFactory,
) -> None:
    from tidings.brokers.redis import ClusterRedis, RedisBroker
    from tidings.brokers.redis.connect import close, connect

    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscriptions.subscribe(APP, "c", "2.1")
    assert isinstance(b.broker, RedisBroker) and make_broker.redis_url is not None
    bus = b.broker.link.cluster
    garbage = [
        (bus.topic(APP, "c"), b"\xff\x00\x00garbage"),
        (bus.topic(APP, "c"), b"a\x00\x00" + event_message("e")[:-1]),
        (bus.control_topic, b'{"o":"x","a":"12345","k":"terminate","u":'),
        (bus.control_topic, b'{"o":"x","a":"12345","k":"explode","u":"u"}'),
    ]
    client = connect(make_broker.redis_url, max_connections=2)
    try:
        for topic, data in garbage:
            await ClusterRedis(client, make_broker.prefix, bus.sharded).send(topic, data)
    finally:
        await close(client)
    end = marker()
    assert await a.broker.pubsub.publish(APP, "c", end, None) is True
    await a.broker.control.send(APP, Terminate("end-marker"))
    await b.wait_frame(APP, "c", end)
    await b.wait_control(APP, Terminate("end-marker"))
    assert b.deliveries == [(APP, "c", end, None)]
    assert b.controls == [(APP, Terminate("end-marker"))]
    assert b.broker.bus.dropped == {
        "malformed": 2,
        "bad_frame": 1,
        "unknown_kind": 1,
        "handler_error": 0,
    }
    assert b.broker.degraded is False
