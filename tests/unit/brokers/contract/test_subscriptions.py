"""broker.subscriptions (Subscriptions): counts and occupied channels are cluster-wide,
each change atomic; a burst of commands is load, never an outage."""

from __future__ import annotations

import asyncio

from broker_contract import (
    APP,
    OTHER_APP,
    BrokerFactory,
    cluster,
)


async def test_a_burst_of_subscriptions_is_load_not_an_outage(
    make_broker: BrokerFactory,
) -> None:
    # A reconnect storm: far more concurrent commands than the broker has connections.
    node = await make_broker()
    await asyncio.gather(
        *(node.broker.subscriptions.subscribe(APP, "storm", f"{i}.1") for i in range(600))
    )
    assert node.broker.degraded is False
    assert await node.broker.subscriptions.count(APP, "storm") == 600


async def test_subscription_counts_and_channels(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.subscriptions.count(APP, "c") == 0
    assert await broker.subscriptions.channels(APP) == {}
    assert await broker.subscriptions.subscribe(APP, "c", "1.1") == 1
    assert await broker.subscriptions.subscribe(APP, "c", "1.1") == 1  # the same socket again
    assert await broker.subscriptions.subscribe(APP, "c", "2.2") == 2
    assert await broker.subscriptions.subscribe(APP, "d", "1.1") == 1
    assert await broker.subscriptions.subscribe(OTHER_APP, "c", "3.3") == 1
    assert await broker.subscriptions.count(APP, "c") == 2
    assert await broker.subscriptions.channels(APP) == {"c": 2, "d": 1}
    assert await broker.subscriptions.unsubscribe(APP, "c", "1.1") == 1
    assert await broker.subscriptions.unsubscribe(APP, "c", "9.9") == 1  # never subscribed
    assert await broker.subscriptions.unsubscribe(APP, "never", "2.2") == 0
    assert await broker.subscriptions.unsubscribe(APP, "c", "2.2") == 0
    assert await broker.subscriptions.count(APP, "c") == 0
    assert await broker.subscriptions.channels(APP) == {"d": 1}  # empty channels are not listed
    assert await broker.subscriptions.unsubscribe(APP, "d", "1.1") == 0
    assert await broker.subscriptions.channels(APP) == {}
    assert await broker.subscriptions.channels(OTHER_APP) == {"c": 1}


@cluster
async def test_subscription_counts_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.subscriptions.subscribe(APP, "c", "1.1") == 1
    assert await b.subscriptions.subscribe(APP, "c", "2.1") == 2
    assert await b.subscriptions.subscribe(APP, "c", "2.1") == 2  # the same socket again
    assert await a.subscriptions.subscribe(APP, "d", "1.1") == 1
    assert await a.subscriptions.count(APP, "c") == 2
    assert await b.subscriptions.count(APP, "c") == 2
    assert await a.subscriptions.channels(APP) == {"c": 2, "d": 1}
    assert await b.subscriptions.channels(APP) == {"c": 2, "d": 1}
    assert await b.subscriptions.channels(OTHER_APP) == {}
    assert await a.subscriptions.unsubscribe(APP, "c", "1.1") == 1
    assert await b.subscriptions.count(APP, "c") == 1
    assert await b.subscriptions.unsubscribe(APP, "c", "2.1") == 0
    assert await a.subscriptions.channels(APP) == {"d": 1}
    assert await b.subscriptions.channels(APP) == {"d": 1}


async def test_occupied_channels(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.subscriptions.occupied(APP, []) == set()
    assert await broker.subscriptions.occupied(APP, ["c", "d"]) == set()
    await broker.subscriptions.subscribe(APP, "c", "1.1")
    await broker.subscriptions.subscribe(OTHER_APP, "d", "2.1")
    assert await broker.subscriptions.occupied(APP, ["c", "d", "c"]) == {"c"}
    await broker.subscriptions.unsubscribe(APP, "c", "1.1")
    assert await broker.subscriptions.occupied(APP, ["c", "d"]) == set()


@cluster
async def test_occupied_is_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    await b.subscriptions.subscribe(APP, "c", "2.1")
    assert await a.subscriptions.occupied(APP, ["c", "d"]) == {"c"}
    await b.subscriptions.unsubscribe(APP, "c", "2.1")
    assert await a.subscriptions.occupied(APP, ["c"]) == set()
