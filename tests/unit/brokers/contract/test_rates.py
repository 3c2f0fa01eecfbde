"""broker.rates (RateCounters): REST events per second, counted cluster-wide, starting
from zero every second."""

from __future__ import annotations

import math
import time

from broker_contract import (
    APP,
    OTHER_APP,
    BrokerFactory,
    cluster,
)


async def test_count_backend_events_accumulates_within_a_second(
    make_broker: BrokerFactory,
) -> None:
    broker = (await make_broker()).broker
    second = math.floor(time.time())
    assert await broker.rates.count_backend_events(APP, 3, second + 0.1) == 3
    assert await broker.rates.count_backend_events(APP, 4, second + 0.9) == 7
    assert await broker.rates.count_backend_events(OTHER_APP, 1, second + 0.5) == 1
    assert await broker.rates.count_backend_events(APP, 0, second + 0.95) == 7
    # The next second starts from zero.
    assert await broker.rates.count_backend_events(APP, 2, second + 1.2) == 2
    assert await broker.rates.count_backend_events(APP, 5, second + 1.7) == 7


@cluster
async def test_backend_events_are_counted_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    second = math.floor(time.time())
    assert await a.rates.count_backend_events(APP, 3, second + 0.2) == 3
    await a.rates.reconcile()
    assert await b.rates.count_backend_events(APP, 4, second + 0.4) == 4
    await b.rates.reconcile()  # learns a's 3
    assert await b.rates.count_backend_events(APP, 0, second + 0.5) == 7
    assert await a.rates.count_backend_events(APP, 1, second + 0.6) == 4
    await a.rates.reconcile()
    assert await a.rates.count_backend_events(APP, 0, second + 0.7) == 8


@cluster
async def test_nodes_see_each_other_only_after_a_reconcile(make_broker: BrokerFactory) -> None:
    """The documented slack: between two reconciles a node judges requests on its own count
    plus the others' as last learned, so two nodes may each accept up to the limit."""
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    second = math.floor(time.time())
    assert await a.rates.count_backend_events(APP, 60, second + 0.1) == 60
    assert await b.rates.count_backend_events(APP, 60, second + 0.1) == 60  # not yet 120
    await a.rates.reconcile()
    await b.rates.reconcile()
    assert await b.rates.count_backend_events(APP, 1, second + 0.2) == 121
    assert await a.rates.count_backend_events(APP, 1, second + 0.2) == 61  # b's 1: unsent
    await a.rates.reconcile()
    assert await a.rates.count_backend_events(APP, 0, second + 0.3) == 121
