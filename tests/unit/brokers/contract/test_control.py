"""broker.control (ControlBus): a control message runs once on every node (the sender
included); a payload to one node reaches that node's handler alone."""

from __future__ import annotations

from collections import Counter

from broker_contract import (
    APP,
    OTHER_APP,
    BrokerFactory,
    cluster,
)
from tidings.brokers.control import Terminate, UserOffline, UserOnline


async def test_control_runs_the_local_handler(make_broker: BrokerFactory) -> None:
    node = await make_broker()
    terminate = Terminate("u1")
    online = UserOnline("u2")
    await node.broker.control.send(APP, terminate)
    await node.broker.control.send(OTHER_APP, online)
    await node.wait_control(APP, terminate)
    await node.wait_control(OTHER_APP, online)
    assert Counter(node.controls) == Counter([(APP, terminate), (OTHER_APP, online)])


@cluster
async def test_control_reaches_every_node_once(make_broker: BrokerFactory) -> None:
    a, b = await make_broker("a"), await make_broker("b")
    first = Terminate("u1")
    second = UserOnline("u2")
    third = UserOffline("u2")
    await a.broker.control.send(APP, first)
    await a.broker.control.send(APP, second)
    await b.wait_control(APP, second)
    # As with publish: B's control is sent after B saw A's, so any echo of A's own controls
    # back to A arrives before it.
    await b.broker.control.send(APP, third)
    await a.wait_control(APP, third)
    await b.wait_control(APP, third)
    expected = Counter([(APP, first), (APP, second), (APP, third)])
    assert Counter(a.controls) == expected
    assert Counter(b.controls) == expected
