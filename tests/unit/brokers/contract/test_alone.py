"""A node alone: what every interface answers from this node's own sockets.

Runs against the memory broker (one process by design) and against a Redis broker whose
Redis cannot be reached (degraded, ``base.py``): both must answer the same, without raising,
except where the guarantee says otherwise (a degraded publish reports that other nodes
missed it; a degraded cache keeps nothing).
"""

from __future__ import annotations

import math
import time

from broker_contract import APP, OTHER_APP, BrokerFactory, by_user, event_message
from tidings.brokers.base import CachedEvent
from tidings.brokers.control import Terminate
from tidings.protocol.session import Member


async def test_degraded_only_when_the_backend_is_unreachable(make_alone: BrokerFactory) -> None:
    node = await make_alone()
    assert node.broker.degraded is (make_alone.kind == "redis-unreachable")


async def test_publish_reaches_local_subscribers_before_it_returns(
    make_alone: BrokerFactory,
) -> None:
    node = await make_alone()
    await node.broker.subscriptions.subscribe(APP, "c", "1.1")
    handed_to_every_node = await node.broker.pubsub.publish(APP, "c", event_message("e"), "2.2")
    assert node.deliveries == [(APP, "c", event_message("e"), "2.2")]
    assert handed_to_every_node is not node.broker.degraded


async def test_subscriptions_count_this_nodes_sockets(make_alone: BrokerFactory) -> None:
    subscriptions = (await make_alone()).broker.subscriptions
    assert await subscriptions.subscribe(APP, "c", "1.1") == 1
    assert await subscriptions.subscribe(APP, "c", "1.2") == 2
    assert await subscriptions.subscribe(OTHER_APP, "d", "1.1") == 1
    assert await subscriptions.count(APP, "c") == 2
    assert await subscriptions.channels(APP) == {"c": 2}
    assert await subscriptions.occupied(APP, ["c", "d"]) == {"c"}
    assert await subscriptions.unsubscribe(APP, "c", "1.1") == 1
    assert await subscriptions.unsubscribe(APP, "c", "1.2") == 0
    assert await subscriptions.occupied(APP, ["c"]) == set()


async def test_presence_firsts_lasts_and_limits_among_this_nodes_sockets(
    make_alone: BrokerFactory,
) -> None:
    presence = (await make_alone()).broker.presence
    ann, bob, cat = Member("ann", {"n": 1}), Member("bob"), Member("cat")
    joined = await presence.join(APP, "presence-p", "1.1", ann, 2)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [ann])
    joined = await presence.join(APP, "presence-p", "1.2", ann, 2)
    assert (joined.accepted, joined.first) == (True, False)
    assert (await presence.join(APP, "presence-p", "2.1", bob, 2)).first is True
    refused = await presence.join(APP, "presence-p", "3.1", cat, 2)
    assert (refused.accepted, by_user(refused.members)) == (False, [ann, bob])
    assert by_user(await presence.members(APP, "presence-p")) == [ann, bob]
    assert await presence.leave(APP, "presence-p", "1.1", "ann") is False
    assert await presence.leave(APP, "presence-p", "1.2", "ann") is True
    assert await presence.members(APP, "presence-p") == [bob]
    assert await presence.user_online(APP, "u1", "1.1") is True
    assert await presence.user_online(APP, "u1", "1.2") is False
    assert await presence.users_online(APP, ["u1", "u2"]) == ["u1"]
    assert await presence.user_offline(APP, "u1", "1.1") is False
    assert await presence.user_offline(APP, "u1", "1.2") is True
    assert await presence.users_online(APP, ["u1"]) == []


async def test_control_claims_and_rates_are_this_nodes(make_alone: BrokerFactory) -> None:
    node = await make_alone()
    broker = node.broker
    await broker.control.send(APP, Terminate("u1"))
    assert node.controls == [(APP, Terminate("u1"))]  # run before send returned
    await broker.control.to_node("another-node", b"lost")  # nowhere to go, no error
    assert await broker.claims.claim("session-1", 10.0) == broker.node_id
    await broker.claims.refresh(["session-1"], 10.0)
    second = math.floor(time.time())
    assert await broker.rates.count_backend_events(APP, 3, second + 0.1) == 3
    assert await broker.rates.count_backend_events(APP, 4, second + 0.2) == 7
    assert await broker.rates.count_backend_events(APP, 1, second + 1.1) == 1


async def test_the_cache_keeps_nothing_while_degraded(make_alone: BrokerFactory) -> None:
    broker = (await make_alone()).broker
    now = time.monotonic()
    event = CachedEvent(b'{"event":"e"}', now + 60)
    await broker.cache.set(APP, "cache-c", event, now)
    got = await broker.cache.get(APP, "cache-c", now)
    assert got == (None if broker.degraded else event)
