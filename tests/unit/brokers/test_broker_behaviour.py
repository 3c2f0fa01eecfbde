"""The Broker contract (brokers/base.py), tested once per implementation.

Every behaviour below is written once and runs against ``MemoryBroker`` and against
``RedisBroker`` on a real redis-server (plain and sharded pub/sub), each test under its own
key prefix. Cluster behaviours (two nodes sharing a prefix) run on Redis only: the memory
broker is a single node by design.

Deliveries through Redis are asynchronous. Waits are bounded polls; "nothing arrived" is
proved by publishing a later marker the receiver must get, from the same node, and waiting
for it: Redis pub/sub delivers to one subscriber connection in publish order, so once the
marker is in, anything published before it would be too.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import pytest

from tidings.brokers.base import Broker, CachedEvent, ControlMessage
from tidings.protocol.session import Member

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
NODE_TTL = 2 * TIMEOUT  # long enough that no live test node is ever declared dead

APP = "12345"
OTHER_APP = "23456"

IMPLEMENTATIONS = ["memory", "redis", "redis-sharded"]
CLUSTERED = ["redis", "redis-sharded"]  # the memory broker is one node by design

Delivery = tuple[str, str, bytes, str | None]


async def eventually(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def event_message(event: str, data: str = "") -> bytes:
    """What the node publishes: one Pusher event, unframed JSON (brokers/bus.py)."""
    return json.dumps({"event": event, "data": data}).encode()


# Messages of any size, with separators and UTF-8 in their payloads.
ODD_MESSAGES = [
    '{"event":"é🚀","data":"a\\nb | c:d # \\u0000"}'.encode(),
    event_message("x", "x" * 230),
    event_message("y", "y" * 70_000),
    event_message("\x00|:#\n\t", "é☃ \x00"),
    event_message(""),
]


def marker() -> bytes:
    return event_message("marker", uuid4().hex)


@dataclass
class Node:
    """A started broker and everything it handed to deliver() and control()."""

    name: str
    broker: Broker
    deliveries: list[Delivery] = field(default_factory=list)
    controls: list[tuple[str, ControlMessage]] = field(default_factory=list)

    def deliver(self, app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
        self.deliveries.append((app_id, channel, frame, exclude))

    async def control(self, app_id: str, message: ControlMessage) -> None:
        self.controls.append((app_id, message))

    def frames(self, app_id: str, channel: str) -> list[bytes]:
        return [f for a, c, f, _ in self.deliveries if (a, c) == (app_id, channel)]

    async def wait_frame(self, app_id: str, channel: str, frame: bytes) -> None:
        await eventually(
            lambda: frame in self.frames(app_id, channel),
            f"{self.name} to receive {frame!r} on {app_id}/{channel}; got {self.deliveries!r}",
        )

    async def wait_delivery(
        self, match: Callable[[Delivery], bool], what: str, timeout: float = TIMEOUT
    ) -> None:
        await eventually(
            lambda: any(match(d) for d in self.deliveries),
            f"{self.name} to receive {what}; got {self.deliveries!r}",
            timeout,
        )

    async def wait_control(self, app_id: str, message: ControlMessage) -> None:
        await eventually(
            lambda: (app_id, message) in self.controls,
            f"{self.name} to run control {message!r}; got {self.controls!r}",
        )


class BrokerFactory:
    """``await make_broker()`` → a started Node; nodes of one test share a Redis prefix."""

    def __init__(self, kind: str, redis_url: str | None, prefix: str) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = prefix
        self.nodes: list[Node] = []

    async def __call__(
        self, name: str | None = None, prefix: str | None = None, node_ttl: float = NODE_TTL
    ) -> Node:
        name = name or f"node{len(self.nodes) + 1}"
        prefix = prefix or self.prefix
        broker: Broker
        if self.kind == "memory":
            from tidings.brokers.memory import MemoryBroker

            broker = MemoryBroker()
        else:
            from tidings.brokers.redis import RedisBroker

            assert self.redis_url is not None
            broker = RedisBroker(
                self.redis_url,
                prefix=prefix,
                node_id=f"{prefix}-{name}",
                sharded=self.kind == "redis-sharded",
                node_ttl=node_ttl,
            )
        node = Node(name, broker)
        self.nodes.append(node)  # closed at teardown even if start() fails half-way
        await broker.start(node.deliver, node.control)
        return node

    async def close_node(self, node: Node) -> None:
        self.nodes.remove(node)
        await asyncio.wait_for(node.broker.close(), 2 * TIMEOUT)

    async def close(self) -> None:
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                await asyncio.wait_for(node.broker.close(), 2 * TIMEOUT)
            except BaseException as exc:  # close every node before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(params=IMPLEMENTATIONS)
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Started brokers of one implementation; every one is closed after the test."""
    kind: str = request.param
    redis_url: str | None = None
    prefix = "memory"
    if kind != "memory":
        redis_url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("redis_prefix")
    factory = BrokerFactory(kind, redis_url, prefix)
    try:
        yield factory
    finally:
        await factory.close()


def by_user(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m.user_id)


# --- one node ---------------------------------------------------------------------------------


async def test_identity_after_start(make_broker: BrokerFactory) -> None:
    node = await make_broker("a")
    assert isinstance(node.broker.node_id, str) and node.broker.node_id
    if make_broker.kind != "memory":
        assert node.broker.node_id == f"{make_broker.prefix}-a"
    assert node.broker.degraded is False


async def test_publish_delivered_once_with_exclude(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscribe(APP, "c", "1.1")
    await node.broker.publish(APP, "c", event_message("one"), None)
    await node.broker.publish(APP, "c", event_message("two"), "1.1")
    end = marker()
    await node.broker.publish(APP, "c", end, None)
    await node.wait_frame(APP, "c", end)
    assert node.deliveries == [
        (APP, "c", event_message("one"), None),
        (APP, "c", event_message("two"), "1.1"),
        (APP, "c", end, None),
    ]


async def test_hundred_publishes_arrive_in_order(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscribe(APP, "c", "1.1")
    sent = [(event_message("e", str(i)), "1.1" if i % 3 else None) for i in range(100)]
    for frame, exclude in sent:
        await node.broker.publish(APP, "c", frame, exclude)
    end = marker()
    await node.broker.publish(APP, "c", end, None)
    await node.wait_frame(APP, "c", end)
    assert node.deliveries == [(APP, "c", f, x) for f, x in sent] + [(APP, "c", end, None)]


async def test_frames_and_names_arrive_byte_exact(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    channel = "private-a_b-c=d@e,f.g;h"
    await node.broker.subscribe(APP, channel, "123.456")
    for frame in ODD_MESSAGES:
        await node.broker.publish(APP, channel, frame, "123.456")
    end = marker()
    await node.broker.publish(APP, channel, end, None)
    await node.wait_frame(APP, channel, end)
    assert node.deliveries == [(APP, channel, f, "123.456") for f in ODD_MESSAGES] + [
        (APP, channel, end, None)
    ]


async def test_publish_keeps_apps_apart(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    await node.broker.subscribe(APP, "c", "1.1")
    await node.broker.subscribe(OTHER_APP, "c", "2.1")
    await node.broker.publish(OTHER_APP, "c", event_message("other"), None)
    await node.broker.publish(APP, "c", event_message("mine"), None)
    await node.wait_frame(APP, "c", event_message("mine"))
    await node.wait_frame(OTHER_APP, "c", event_message("other"))
    assert node.frames(APP, "c") == [event_message("mine")]
    assert node.frames(OTHER_APP, "c") == [event_message("other")]


async def test_a_burst_of_subscriptions_is_load_not_an_outage(
    make_broker: BrokerFactory,
) -> None:
    # A reconnect storm: far more concurrent commands than the broker has connections.
    node = await make_broker()
    await asyncio.gather(*(node.broker.subscribe(APP, "storm", f"{i}.1") for i in range(600)))
    assert node.broker.degraded is False
    assert await node.broker.subscription_count(APP, "storm") == 600


async def test_subscription_counts_and_channels(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.subscription_count(APP, "c") == 0
    assert await broker.channels(APP) == {}
    assert await broker.subscribe(APP, "c", "1.1") == 1
    assert await broker.subscribe(APP, "c", "1.1") == 1  # the same socket again
    assert await broker.subscribe(APP, "c", "2.2") == 2
    assert await broker.subscribe(APP, "d", "1.1") == 1
    assert await broker.subscribe(OTHER_APP, "c", "3.3") == 1
    assert await broker.subscription_count(APP, "c") == 2
    assert await broker.channels(APP) == {"c": 2, "d": 1}
    assert await broker.unsubscribe(APP, "c", "1.1") == 1
    assert await broker.unsubscribe(APP, "c", "9.9") == 1  # never subscribed
    assert await broker.unsubscribe(APP, "never", "2.2") == 0
    assert await broker.unsubscribe(APP, "c", "2.2") == 0
    assert await broker.subscription_count(APP, "c") == 0
    assert await broker.channels(APP) == {"d": 1}  # empty channels are not listed
    assert await broker.unsubscribe(APP, "d", "1.1") == 0
    assert await broker.channels(APP) == {}
    assert await broker.channels(OTHER_APP) == {"c": 1}


async def test_presence_join_first_members_accepted(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann = Member("ann", {"name": "Ann"})
    bob = Member("bob", None)
    joined = await broker.presence_join(APP, "presence-p", "1.1", ann, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [ann])
    joined = await broker.presence_join(APP, "presence-p", "1.2", ann, 10)  # second socket
    assert (joined.accepted, joined.first, joined.members) == (True, False, [ann])
    joined = await broker.presence_join(APP, "presence-p", "1.2", ann, 10)  # same socket again
    assert (joined.accepted, joined.first) == (True, False)
    joined = await broker.presence_join(APP, "presence-p", "2.1", bob, 10)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [ann, bob]
    assert by_user(await broker.presence_members(APP, "presence-p")) == [ann, bob]
    assert await broker.presence_members(APP, "presence-q") == []
    assert await broker.presence_members(OTHER_APP, "presence-p") == []


async def test_presence_leave_last_only_on_last_socket(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann, bob = Member("ann"), Member("bob")
    await broker.presence_join(APP, "presence-p", "1.1", ann, 10)
    await broker.presence_join(APP, "presence-p", "1.2", ann, 10)
    await broker.presence_join(APP, "presence-p", "2.1", bob, 10)
    assert await broker.presence_leave(APP, "presence-p", "9.9", "ann") is False  # unknown socket
    assert await broker.presence_leave(APP, "presence-p", "1.1", "ann") is False
    assert by_user(await broker.presence_members(APP, "presence-p")) == [ann, bob]
    assert await broker.presence_leave(APP, "presence-p", "1.2", "ann") is True
    assert await broker.presence_leave(APP, "presence-p", "1.2", "ann") is False  # already gone
    assert await broker.presence_members(APP, "presence-p") == [bob]
    assert await broker.presence_leave(APP, "presence-p", "2.1", "bob") is True
    assert await broker.presence_members(APP, "presence-p") == []
    assert await broker.presence_leave(APP, "presence-never", "1.1", "ann") is False
    # The user is new again after leaving.
    joined = await broker.presence_join(APP, "presence-p", "1.3", ann, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [ann])


async def test_presence_max_members_refuses_new_users_only(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann, bob, cat = Member("ann"), Member("bob"), Member("cat")
    await broker.presence_join(APP, "presence-p", "1.1", ann, 2)
    await broker.presence_join(APP, "presence-p", "2.1", bob, 2)
    refused = await broker.presence_join(APP, "presence-p", "3.1", cat, 2)
    assert (refused.accepted, refused.first) == (False, False)
    assert by_user(refused.members) == [ann, bob]
    assert by_user(await broker.presence_members(APP, "presence-p")) == [ann, bob]
    # Another socket of a member is not a new member.
    again = await broker.presence_join(APP, "presence-p", "1.2", ann, 2)
    assert (again.accepted, again.first) == (True, False)
    # The refused socket was never added: leaving with it is not a "last".
    assert await broker.presence_leave(APP, "presence-p", "3.1", "cat") is False
    assert await broker.presence_leave(APP, "presence-p", "2.1", "bob") is True
    joined = await broker.presence_join(APP, "presence-p", "3.1", cat, 2)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [ann, cat]


async def test_presence_refused_join_on_empty_channel_leaves_nothing(
    make_broker: BrokerFactory,
) -> None:
    broker = (await make_broker()).broker
    refused = await broker.presence_join(APP, "presence-p", "1.1", Member("ann"), 0)
    assert (refused.accepted, refused.first, refused.members) == (False, False, [])
    assert await broker.presence_members(APP, "presence-p") == []
    assert await broker.presence_leave(APP, "presence-p", "1.1", "ann") is False


@pytest.mark.parametrize(
    "user_info",
    [
        None,
        "plain string",
        42,
        1.5,
        True,
        ["a", 1, None, {"b": [2]}],
        {"name": "Zoë 🚀", "tags": ["a", 1], "nested": {"x": None, "y": False}, "n": -1.25},
        {},
    ],
)
async def test_presence_user_info_round_trips_as_json(
    make_broker: BrokerFactory, user_info: Any
) -> None:
    broker = (await make_broker()).broker
    member = Member("u1", user_info)
    joined = await broker.presence_join(APP, "presence-p", "1.1", member, 10)
    assert joined.members == [member]
    (got,) = await broker.presence_members(APP, "presence-p")
    assert got.user_id == "u1"
    assert json.dumps(got.user_info, sort_keys=True) == json.dumps(user_info, sort_keys=True)
    assert type(got.user_info) is type(user_info)


async def test_users_online_offline(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.users_online(APP, ["u1", "u2"]) == []
    assert await broker.user_online(APP, "u1", "1.1") is True
    assert await broker.user_online(APP, "u1", "1.2") is False
    assert await broker.user_online(APP, "u2", "2.1") is True
    assert sorted(await broker.users_online(APP, ["u1", "u2", "u3"])) == ["u1", "u2"]
    assert await broker.users_online(OTHER_APP, ["u1"]) == []
    assert await broker.users_online(APP, []) == []
    assert await broker.user_offline(APP, "u1", "1.1") is False
    assert await broker.user_offline(APP, "u1", "9.9") is False  # unknown socket
    assert await broker.users_online(APP, ["u1"]) == ["u1"]
    assert await broker.user_offline(APP, "u1", "1.2") is True
    assert await broker.user_offline(APP, "u1", "1.2") is False  # already offline
    assert await broker.users_online(APP, ["u1", "u2"]) == ["u2"]
    assert await broker.user_online(APP, "u1", "1.3") is True  # first again


async def test_cache_set_get_and_overwrite(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    now = time.monotonic()
    assert await broker.cache_get(APP, "cache-c", now) is None
    first = CachedEvent(b'{"event":"e","data":"1"}', now + 20 * TIMEOUT)
    await broker.cache_set(APP, "cache-c", first, now)
    got = await broker.cache_get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == first.message
    assert got.expires_at == pytest.approx(first.expires_at, abs=TIMEOUT)
    assert await broker.cache_get(OTHER_APP, "cache-c", now) is None
    assert await broker.cache_get(APP, "cache-d", now) is None
    newer = CachedEvent(b'{"event":"e","data":"2"}', now + 40 * TIMEOUT)
    await broker.cache_set(APP, "cache-c", newer, time.monotonic())
    got = await broker.cache_get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == newer.message
    assert got.expires_at == pytest.approx(newer.expires_at, abs=TIMEOUT)


async def test_cache_expires(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    now = time.monotonic()
    ttl = 0.2
    await broker.cache_set(APP, "cache-c", CachedEvent(b"short", now + ttl), now)
    await broker.cache_set(APP, "cache-d", CachedEvent(b"long", now + 20 * TIMEOUT), now)
    # A deterministic wait: expiry is a matter of elapsed time, not of an event to poll for.
    await asyncio.sleep(ttl + 0.1)
    later = time.monotonic()
    assert later >= now + ttl
    assert await broker.cache_get(APP, "cache-c", later) is None
    assert await broker.cache_get(APP, "cache-c", later) is None  # and stays gone
    kept = await broker.cache_get(APP, "cache-d", later)
    assert kept is not None and kept.message == b"long"
    # Setting it again after expiry works like a first set.
    await broker.cache_set(APP, "cache-c", CachedEvent(b"again", later + 20 * TIMEOUT), later)
    again = await broker.cache_get(APP, "cache-c", time.monotonic())
    assert again is not None and again.message == b"again"


async def test_control_runs_the_local_handler(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    terminate = ControlMessage("terminate", "u1")
    online = ControlMessage("online", "u2")
    await node.broker.control(APP, terminate)
    await node.broker.control(OTHER_APP, online)
    await node.wait_control(APP, terminate)
    await node.wait_control(OTHER_APP, online)
    assert Counter(node.controls) == Counter([(APP, terminate), (OTHER_APP, online)])


async def test_count_backend_events_accumulates_within_a_second(
    make_broker: BrokerFactory,
) -> None:
    broker = (await make_broker()).broker
    second = math.floor(time.time())
    assert await broker.count_backend_events(APP, 3, second + 0.1) == 3
    assert await broker.count_backend_events(APP, 4, second + 0.9) == 7
    assert await broker.count_backend_events(OTHER_APP, 1, second + 0.5) == 1
    assert await broker.count_backend_events(APP, 0, second + 0.95) == 7
    # The next second starts from zero.
    assert await broker.count_backend_events(APP, 2, second + 1.2) == 2
    assert await broker.count_backend_events(APP, 5, second + 1.7) == 7


# --- a cluster of nodes sharing a prefix (Redis only) -----------------------------------------

cluster = pytest.mark.parametrize("make_broker", CLUSTERED, indirect=True)


@cluster
async def test_publish_reaches_other_node_once_and_own_node_once(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await a.broker.subscribe(APP, "c", "1.1")
    await b.broker.subscribe(APP, "c", "2.1")
    await a.broker.publish(APP, "c", event_message("m1"), "1.1")
    end_a = marker()
    await a.broker.publish(APP, "c", end_a, None)
    await b.wait_frame(APP, "c", end_a)
    # B answers after it has seen A's marker, so any echo of A's own publications back to A
    # reached A's subscriber connection before B's marker does.
    end_b = marker()
    await b.broker.publish(APP, "c", end_b, None)
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
    await b.broker.subscribe(APP, channel, "2.1")
    for frame in ODD_MESSAGES:
        await a.broker.publish(APP, channel, frame, "123.456")
    end = marker()
    await a.broker.publish(APP, channel, end, None)
    await b.wait_frame(APP, channel, end)
    assert b.deliveries == [(APP, channel, f, "123.456") for f in ODD_MESSAGES] + [
        (APP, channel, end, None)
    ]


@cluster
async def test_hundred_publishes_arrive_in_order_on_another_node(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscribe(APP, "c", "2.1")
    sent = [(event_message("e", str(i)), "1.1" if i % 2 else None) for i in range(100)]
    for frame, exclude in sent:
        await a.broker.publish(APP, "c", frame, exclude)
    end = marker()
    await a.broker.publish(APP, "c", end, None)
    await b.wait_frame(APP, "c", end)
    assert b.deliveries == [(APP, "c", f, x) for f, x in sent] + [(APP, "c", end, None)]


@cluster
async def test_node_without_subscriber_gets_nothing(make_broker: BrokerFactory) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await a.broker.subscribe(APP, "c", "1.1")  # only A has a subscriber for "c"
    await b.broker.subscribe(APP, "d", "2.1")
    await a.broker.publish(APP, "c", event_message("not-for-b"), None)
    await a.broker.publish(
        OTHER_APP, "d", event_message("other-app"), None
    )  # same channel, other app
    end = marker()
    await a.broker.publish(APP, "d", end, None)
    await b.wait_frame(APP, "d", end)
    assert b.deliveries == [(APP, "d", end, None)]
    await a.wait_frame(APP, "c", event_message("not-for-b"))


@cluster
async def test_node_stops_receiving_after_its_last_unsubscribe(
    make_broker: BrokerFactory,
) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscribe(APP, "c", "2.1")
    await b.broker.subscribe(APP, "c", "2.2")
    await b.broker.subscribe(APP, "d", "2.1")
    await a.broker.publish(APP, "c", event_message("before"), None)
    await b.wait_frame(APP, "c", event_message("before"))
    await b.broker.unsubscribe(APP, "c", "2.1")
    await a.broker.publish(APP, "c", event_message("one-left"), None)  # B still has socket 2.2
    await b.wait_frame(APP, "c", event_message("one-left"))
    await b.broker.unsubscribe(APP, "c", "2.2")
    await a.broker.publish(APP, "c", event_message("after"), None)
    end = marker()
    await a.broker.publish(APP, "d", end, None)
    await b.wait_frame(APP, "d", end)
    assert b.frames(APP, "c") == [event_message("before"), event_message("one-left")]


@cluster
async def test_closed_node_receives_nothing(make_broker: BrokerFactory) -> None:
    a, b, c = await make_broker("a"), await make_broker("b"), await make_broker("c")
    await b.broker.subscribe(APP, "x", "2.1")
    await c.broker.subscribe(APP, "x", "3.1")
    await make_broker.close_node(b)
    await a.broker.publish(APP, "x", event_message("after-close"), None)
    await a.broker.control(APP, ControlMessage("terminate", "u1"))
    await c.wait_frame(APP, "x", event_message("after-close"))
    await c.wait_control(APP, ControlMessage("terminate", "u1"))
    assert b.deliveries == []
    assert b.controls == []


@cluster
async def test_subscription_counts_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.subscribe(APP, "c", "1.1") == 1
    assert await b.subscribe(APP, "c", "2.1") == 2
    assert await b.subscribe(APP, "c", "2.1") == 2  # the same socket again
    assert await a.subscribe(APP, "d", "1.1") == 1
    assert await a.subscription_count(APP, "c") == 2
    assert await b.subscription_count(APP, "c") == 2
    assert await a.channels(APP) == {"c": 2, "d": 1}
    assert await b.channels(APP) == {"c": 2, "d": 1}
    assert await b.channels(OTHER_APP) == {}
    assert await a.unsubscribe(APP, "c", "1.1") == 1
    assert await b.subscription_count(APP, "c") == 1
    assert await b.unsubscribe(APP, "c", "2.1") == 0
    assert await a.channels(APP) == {"d": 1}
    assert await b.channels(APP) == {"d": 1}


@cluster
async def test_presence_first_and_last_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    u1 = Member("u1", {"name": "Ann"})
    joined = await a.presence_join(APP, "presence-p", "1.1", u1, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [u1])
    joined = await b.presence_join(APP, "presence-p", "2.1", u1, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, False, [u1])
    u2 = Member("u2", ["x"])
    joined = await b.presence_join(APP, "presence-p", "2.2", u2, 10)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [u1, u2]
    assert by_user(await a.presence_members(APP, "presence-p")) == [u1, u2]
    assert await a.presence_leave(APP, "presence-p", "1.1", "u1") is False  # B still has s2
    assert by_user(await b.presence_members(APP, "presence-p")) == [u1, u2]
    assert await b.presence_leave(APP, "presence-p", "2.1", "u1") is True
    assert await a.presence_members(APP, "presence-p") == [u2]
    assert await b.presence_leave(APP, "presence-p", "2.2", "u2") is True
    assert await a.presence_members(APP, "presence-p") == []


@cluster
async def test_presence_max_members_is_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    u1, u2 = Member("u1"), Member("u2")
    assert (await a.presence_join(APP, "presence-p", "1.1", u1, 1)).accepted is True
    refused = await b.presence_join(APP, "presence-p", "2.1", u2, 1)
    assert (refused.accepted, refused.first, refused.members) == (False, False, [u1])
    again = await b.presence_join(APP, "presence-p", "2.2", u1, 1)  # u1 is already a member
    assert (again.accepted, again.first, again.members) == (True, False, [u1])
    assert await a.presence_members(APP, "presence-p") == [u1]


@cluster
async def test_concurrent_presence_joins_respect_max_members(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).presence_join(APP, "presence-p", f"{i}.1", Member(f"u{i}"), 5)
            for i in range(20)
        )
    )
    accepted = [r for r in results if r.accepted]
    assert len(accepted) == 5
    assert all(r.first for r in accepted)
    assert len(await a.presence_members(APP, "presence-p")) == 5


@cluster
async def test_users_online_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.user_online(APP, "u1", "1.1") is True
    assert await b.user_online(APP, "u1", "2.1") is False
    assert await b.users_online(APP, ["u1", "u2"]) == ["u1"]
    assert await a.user_offline(APP, "u1", "1.1") is False
    assert await a.users_online(APP, ["u1"]) == ["u1"]
    assert await b.user_offline(APP, "u1", "2.1") is True
    assert await a.users_online(APP, ["u1"]) == []


@cluster
async def test_control_reaches_every_node_once(make_broker: BrokerFactory) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    first = ControlMessage("terminate", "u1")
    second = ControlMessage("online", "u2")
    third = ControlMessage("offline", "u2")
    await a.broker.control(APP, first)
    await a.broker.control(APP, second)
    await b.wait_control(APP, second)
    # As with publish: B's control is sent after B saw A's, so any echo of A's own controls
    # back to A arrives before it.
    await b.broker.control(APP, third)
    await a.wait_control(APP, third)
    await b.wait_control(APP, third)
    expected = Counter([(APP, first), (APP, second), (APP, third)])
    assert Counter(a.controls) == expected
    assert Counter(b.controls) == expected


@cluster
async def test_cached_event_reaches_other_node(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    now = time.monotonic()
    event = CachedEvent(b'{"event":"e"}', now + 20 * TIMEOUT)
    await a.cache_set(APP, "cache-c", event, now)
    got = await b.cache_get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == event.message
    assert got.expires_at == pytest.approx(event.expires_at, abs=TIMEOUT)


@cluster
async def test_backend_events_are_counted_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    second = math.floor(time.time())
    assert await a.count_backend_events(APP, 3, second + 0.2) == 3
    assert await b.count_backend_events(APP, 4, second + 0.4) == 7
    assert await a.count_backend_events(APP, 1, second + 0.6) == 8


@cluster
async def test_nodes_with_another_prefix_share_nothing(make_broker: BrokerFactory) -> None:
    a = await make_broker("a")
    elsewhere = await make_broker("b", prefix=f"{make_broker.prefix}x")
    await a.broker.subscribe(APP, "c", "1.1")
    await elsewhere.broker.subscribe(APP, "c", "2.1")
    await elsewhere.broker.subscribe(APP, "d", "2.1")
    assert await a.broker.subscription_count(APP, "c") == 1
    assert await elsewhere.broker.channels(APP) == {"c": 1, "d": 1}
    await a.broker.presence_join(APP, "presence-p", "1.1", Member("u1"), 1)
    joined = await elsewhere.broker.presence_join(APP, "presence-p", "2.1", Member("u2"), 1)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [Member("u2")])
    assert await a.broker.user_online(APP, "u1", "1.1") is True
    assert await elsewhere.broker.user_online(APP, "u1", "2.1") is True
    await a.broker.publish(APP, "c", event_message("not-for-elsewhere"), None)
    await a.broker.control(APP, ControlMessage("terminate", "u1"))
    # Markers through Redis from a neighbour of "elsewhere", sent after A's were executed.
    neighbour = await make_broker("c", prefix=f"{make_broker.prefix}x")
    end = marker()
    await neighbour.broker.publish(APP, "d", end, None)
    await neighbour.broker.control(APP, ControlMessage("offline", "end"))
    await elsewhere.wait_frame(APP, "d", end)
    await elsewhere.wait_control(APP, ControlMessage("offline", "end"))
    assert elsewhere.deliveries == [(APP, "d", end, None)]
    assert elsewhere.controls == [(APP, ControlMessage("offline", "end"))]


@cluster
async def test_clean_close_removes_the_nodes_sockets_cluster_wide(
    make_broker: BrokerFactory,
) -> None:
    a, b, c = await make_broker("a"), await make_broker("b"), await make_broker("c")
    for node, socket_id, user in ((a, "1.1", "u1"), (b, "2.1", "u2"), (c, "3.1", "u3")):
        await node.broker.subscribe(APP, "presence-p", socket_id)
        await node.broker.presence_join(APP, "presence-p", socket_id, Member(user), 10)
        await node.broker.user_online(APP, user, socket_id)
    await make_broker.close_node(c)
    removed = (APP, ControlMessage("member_removed", "u3", "presence-p"))
    recount = (APP, ControlMessage("recount", channel="presence-p"))
    for node in (a, b):
        await node.wait_control(*removed)
        await node.wait_control(APP, ControlMessage("offline", "u3"))
        await node.wait_control(*recount)
    end = (APP, ControlMessage("terminate", "end-marker"))
    await a.broker.control(*end)
    await b.wait_control(*end)
    for node in (a, b):
        assert node.controls.count(removed) == 1, node.controls
        assert node.controls.count(recount) == 1, node.controls
    assert await a.broker.subscription_count(APP, "presence-p") == 2
    assert by_user(await b.broker.presence_members(APP, "presence-p")) == [
        Member("u1"),
        Member("u2"),
    ]
    assert sorted(await a.broker.users_online(APP, ["u1", "u2", "u3"])) == ["u1", "u2"]


DEAD_NODE = """
import asyncio, sys
from tidings.brokers.redis import RedisBroker
from tidings.protocol.session import Member

async def main() -> None:
    url, prefix, app = sys.argv[1:4]
    broker = RedisBroker(url, prefix=prefix, node_id=prefix + "-dead", node_ttl=60.0)
    await broker.start(lambda *args: None, lambda *args: None)
    await broker.subscribe(app, "presence-p", "9.1")
    await broker.presence_join(app, "presence-p", "9.1", Member("u9"), 10)
    await broker.user_online(app, "u9", "9.1")
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
    await a.broker.subscribe(APP, "presence-p", "1.1")
    await a.broker.presence_join(APP, "presence-p", "1.1", Member("u1"), 10)
    await b.broker.subscribe(APP, "presence-p", "2.1")
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
        assert await a.broker.subscription_count(APP, "presence-p") == 3
        assert await b.broker.users_online(APP, ["u9"]) == ["u9"]
    finally:
        dead.send_signal(signal.SIGKILL)  # no clean close: only the heartbeat stops
        await dead.wait()
    removed = (APP, ControlMessage("member_removed", "u9", "presence-p"))
    deadline = time.monotonic() + node_ttl + 2 * TIMEOUT
    for node in (a, b):
        while removed not in node.controls:
            assert time.monotonic() < deadline, f"no member_removed on {node.name}"
            await asyncio.sleep(0.05)
        await node.wait_control(APP, ControlMessage("offline", "u9"))
        await node.wait_control(APP, ControlMessage("recount", channel="presence-p"))
    end = (APP, ControlMessage("terminate", "end-marker"))
    await a.broker.control(*end)
    await b.wait_control(*end)
    for node in (a, b):
        assert node.controls.count(removed) == 1, node.controls
    assert await b.broker.subscription_count(APP, "presence-p") == 2
    assert await b.broker.presence_members(APP, "presence-p") == [Member("u1")]
    assert await a.broker.users_online(APP, ["u9"]) == []


@cluster
async def test_garbage_on_the_bus_is_dropped_and_counted_and_delivery_goes_on(
    make_broker: BrokerFactory,
) -> None:
    from redis import asyncio as aioredis

    from tidings.brokers.redis import RedisBroker

    a, b = await make_broker("a"), await make_broker("b")
    await b.broker.subscribe(APP, "c", "2.1")
    assert isinstance(b.broker, RedisBroker) and make_broker.redis_url is not None
    prefix = make_broker.prefix
    garbage = [
        (f"{prefix}#{APP}#c", b"\xff\x00\x00garbage"),
        (f"{prefix}#{APP}#c", b"a\x00\x00" + event_message("e")[:-1]),
        (f"{prefix}#control", b'{"o":"x","a":"12345","k":"terminate","u":'),
        (f"{prefix}#control", b'{"o":"x","a":"12345","k":"explode","u":"u"}'),
    ]
    client = aioredis.Redis.from_url(make_broker.redis_url)
    try:
        for topic, data in garbage:
            if make_broker.kind == "redis-sharded" and "#control" not in topic:
                await client.spublish(topic, data)
            else:
                await client.publish(topic, data)
    finally:
        await client.aclose()
    end = marker()
    assert await a.broker.publish(APP, "c", end, None) is True
    await a.broker.control(APP, ControlMessage("terminate", "end-marker"))
    await b.wait_frame(APP, "c", end)
    await b.wait_control(APP, ControlMessage("terminate", "end-marker"))
    assert b.deliveries == [(APP, "c", end, None)]
    assert b.controls == [(APP, ControlMessage("terminate", "end-marker"))]
    assert b.broker.bus.dropped == {
        "malformed": 2,
        "bad_frame": 1,
        "unknown_kind": 1,
        "handler_error": 0,
    }
    assert b.broker.degraded is False
