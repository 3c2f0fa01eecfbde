"""broker.control (ControlBus): a control message runs once on every node (the sender
included); a payload to one node reaches that node's handler alone."""

from __future__ import annotations

from collections import Counter

from broker_contract import (
    APP,
    OTHER_APP,
    BrokerFactory,
    cluster,
    eventually,
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


class Inbox:
    """A node-message handler that keeps what it got."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def __call__(self, payload: bytes) -> None:
        self.payloads.append(payload)


async def test_a_payload_to_this_node_is_handled_before_to_node_returns(
    make_broker: BrokerFactory,
) -> None:
    node = await make_broker()
    inbox = Inbox()
    node.broker.control.on_node_message(inbox)
    await node.broker.control.to_node(node.broker.node_id, b"{\x00 any bytes \xff")
    assert inbox.payloads == [b"{\x00 any bytes \xff"]


@cluster
async def test_a_payload_reaches_its_node_alone_in_order(make_broker: BrokerFactory) -> None:
    a, b, c = await make_broker("a"), await make_broker("b"), await make_broker("c")
    inboxes = {node.name: Inbox() for node in (a, b, c)}
    for node in (a, b, c):
        node.broker.control.on_node_message(inboxes[node.name])
    sent = [f"p{i}".encode() for i in range(20)]
    for payload in sent:
        await a.broker.control.to_node(b.broker.node_id, payload)
    await a.broker.control.to_node("no-such-node", b"nobody")  # dropped, no error
    await a.broker.control.to_node(c.broker.node_id, b"end")
    await eventually(lambda: inboxes["c"].payloads == [b"end"], "c's payload")
    await eventually(lambda: len(inboxes["b"].payloads) == len(sent), "b's payloads")
    assert inboxes["b"].payloads == sent
    assert inboxes["a"].payloads == []
