"""broker.connections (ConnectionCounts): each node reports its connections per app and
learns the other live nodes', so an app's max_connections holds cluster-wide; a report
that is not renewed stops counting, and a node alone (memory, or Redis out of reach)
counts no one else."""

from __future__ import annotations

import asyncio

from broker_contract import APP, OTHER_APP, TIMEOUT, BrokerFactory, cluster

INTERVAL = 60.0  # reports hold three intervals: none expires during a test unless asked


async def test_a_node_alone_sees_no_other_connections(make_broker: BrokerFactory) -> None:
    connections = (await make_broker()).broker.connections
    for _ in range(2):  # its own report is never counted back to it
        others = await connections.report({APP: 5, OTHER_APP: 0}, INTERVAL)
        assert others.get(APP, 0) == 0 and others.get(OTHER_APP, 0) == 0


async def test_alone_reports_count_no_one(make_alone: BrokerFactory) -> None:
    connections = (await make_alone()).broker.connections
    assert await connections.report({APP: 5}, INTERVAL) == {}


@cluster
async def test_each_node_learns_the_others_per_app(make_broker: BrokerFactory) -> None:
    a, b, c = [(await make_broker(name)).broker.connections for name in "abc"]
    assert await a.report({APP: 3, OTHER_APP: 1}, INTERVAL) == {APP: 0, OTHER_APP: 0}
    assert await b.report({APP: 2, OTHER_APP: 0}, INTERVAL) == {APP: 3, OTHER_APP: 1}
    assert await c.report({APP: 0, OTHER_APP: 0}, INTERVAL) == {APP: 5, OTHER_APP: 1}
    assert await a.report({APP: 4, OTHER_APP: 1}, INTERVAL) == {APP: 2, OTHER_APP: 0}
    # A count that drops to zero stops counting at once.
    assert await b.report({APP: 0, OTHER_APP: 0}, INTERVAL) == {APP: 4, OTHER_APP: 1}
    assert await c.report({APP: 0, OTHER_APP: 0}, INTERVAL) == {APP: 4, OTHER_APP: 1}


@cluster
async def test_a_report_not_renewed_stops_counting(make_broker: BrokerFactory) -> None:
    """(That reports are counted is the test above: this one shows they go.)"""
    a, b = [(await make_broker(name)).broker.connections for name in "ab"]
    await a.report({APP: 7}, 0.01)  # holds three intervals, 30 ms, and is never renewed
    async with asyncio.timeout(TIMEOUT):  # a bounded poll: expiry has no event to wait on
        while (seen := (await b.report({APP: 1}, INTERVAL))[APP]) != 0:
            assert seen == 7
            await asyncio.sleep(0.005)
