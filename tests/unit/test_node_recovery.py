"""tidings/recovery.py through the Node: opt-in positions, recovery and gap-filling over the
real MemoryBroker and its history, with the fake connections of test_node.py.

A lost bus message is made by dropping it on its way into the node (the one seam: the
deliver callback the node hands its broker), as a Redis pub/sub blip would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidings.brokers.history import HistoryUnavailable, Position
from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry, HistoryRule
from tidings.core.publication import Publication
from tidings.node import Node, NodeSettings
from tidings.protocol.auth import sign
from tidings.protocol.errors import ErrorCode
from tidings.protocol.rest import Trigger
from tidings.protocol.session import Session

APP = App(
    "12345",
    "app-key",
    "app-secret",
    client_events=True,
    history=(
        HistoryRule("hist-*", 100, 300.0),
        HistoryRule("small-*", 2, 300.0),
        HistoryRule("presence-hist-*", 100, 300.0),
    ),
)


class FakeClock:
    def __call__(self) -> float:
        return 1000.0


class FakeConnection:
    """Records what a client would read: messages sent to it and publications."""

    def __init__(self, node: Node, app: App) -> None:
        self.session: Session = node.new_session(app)
        self.socket_id = self.session.socket_id
        self.app = app
        self.node = node
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: bytes) -> None:
        if self.node.outgoing:  # as the real connections do: earlier publications first
            self.node.outgoing.flush()
        self.sent.append(message)

    def publish(self, publication: Publication) -> None:
        self.sent.extend(publication.messages)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[dict[str, Any]]:
        self.node.outgoing.flush()
        messages = [json.loads(message) for message in self.sent]
        self.sent.clear()
        return messages

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.node.receive(self, json.dumps(message))

    async def subscribe(self, channel: str) -> None:
        await self.send_json({"event": "pusher:subscribe", "data": {"channel": channel}})


def connect(node: Node) -> FakeConnection:
    connection = FakeConnection(node, APP)
    node.attach(connection)
    return connection


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(AppRegistry.of([APP]), MemoryBroker(), NodeSettings(), clock=FakeClock())
    await node.start()
    yield node
    await node.close()


@pytest.fixture
async def lossy() -> AsyncIterator[tuple[Node, set[int]]]:
    """A node that never hears the positioned publications whose offsets are in the set."""
    node = Node(AppRegistry.of([APP]), MemoryBroker(), NodeSettings(), clock=FakeClock())
    lost: set[int] = set()
    deliver = node._deliver

    def lossy_deliver(
        app_id: str, channel: str, message: bytes, exclude: str | None, position: Any = None
    ) -> None:
        if position is not None and position.offset in lost:
            return
        deliver(app_id, channel, message, exclude, position)

    node._deliver = lossy_deliver  # type: ignore[method-assign]
    await node.start()
    yield node, lost
    await node.close()


async def publish(node: Node, channel: str, data: str, socket_id: str | None = None) -> None:
    await node.trigger(APP, Trigger("tick", data, (channel,), socket_id, ()))


async def opt_in(
    connection: FakeConnection, channel: str, recover: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Subscribe with the opt-in; returns the decoded subscription_succeeded data."""
    tidings: dict[str, Any] = {"v": 1}
    if recover is not None:
        tidings["recover"] = recover
    data = {"channel": channel, "tidings": tidings}
    await connection.send_json({"event": "pusher:subscribe", "data": data})
    messages = connection.take()
    assert messages[0]["event"] == "pusher_internal:subscription_succeeded", messages
    connection.sent[:0] = [json.dumps(m).encode() for m in messages[1:]]
    return dict(json.loads(messages[0]["data"]))


def offsets(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["tidings"]["offset"] if "tidings" in m else m["event"] for m in messages]


async def test_opted_in_gets_positions_stock_gets_todays_bytes(node: Node) -> None:
    await publish(node, "hist-a", "0")
    opted, stock = connect(node), connect(node)
    opted.take(), stock.take()
    data = await opt_in(opted, "hist-a")
    assert data["tidings"]["offset"] == 1 and "recovered" not in data
    await stock.subscribe("hist-a")
    assert stock.take()[0]["data"] == "{}"
    await publish(node, "hist-a", "1")
    node.outgoing.flush()
    assert (
        opted.sent[-1] == b'{"event":"tick","channel":"hist-a","data":"1","tidings":{"offset":2}}'
    )
    assert stock.sent[-1] == b'{"event":"tick","channel":"hist-a","data":"1"}'


async def test_opt_in_on_a_channel_without_history_is_ignored(node: Node) -> None:
    c = connect(node)
    c.take()
    await c.send_json(
        {"event": "pusher:subscribe", "data": {"channel": "plain", "tidings": {"v": 1}}}
    )
    assert c.sent == [
        b'{"event":"pusher_internal:subscription_succeeded","channel":"plain","data":"{}"}'
    ]


async def test_recovery_replays_the_missed_minus_own_then_live(node: Node) -> None:
    first = connect(node)
    first.take()
    epoch = (await opt_in(first, "hist-r"))["tidings"]["epoch"]
    await publish(node, "hist-r", "1")
    await node.detach(first)
    await publish(node, "hist-r", "2")
    await publish(node, "hist-r", "mine", socket_id=first.socket_id)
    await publish(node, "hist-r", "4")
    second = connect(node)
    second.take()
    recover = {"epoch": epoch, "offset": 1, "socket_id": first.socket_id}
    data = await opt_in(second, "hist-r", recover)
    assert data == {"tidings": {"epoch": epoch, "offset": 4}, "recovered": True}
    await publish(node, "hist-r", "5")
    received = second.take()
    assert offsets(received) == [2, 4, 5]
    assert node.counters(APP).recovered == 1


async def test_too_many_missed_is_unrecovered_with_no_replay(node: Node) -> None:
    first = connect(node)
    first.take()
    epoch = (await opt_in(first, "small-u"))["tidings"]["epoch"]
    await node.detach(first)
    for n in range(1, 5):
        await publish(node, "small-u", str(n))
    second = connect(node)
    second.take()
    data = await opt_in(second, "small-u", {"epoch": epoch, "offset": 0})
    assert data["recovered"] is False and data["tidings"]["offset"] == 4
    received = second.take()
    assert offsets(received) == ["tidings:unrecovered"]
    assert json.loads(received[0]["data"]) == {"epoch": epoch, "offset": 4}
    assert node.counters(APP).unrecovered == 1


async def test_another_epoch_is_unrecovered(node: Node) -> None:
    c = connect(node)
    c.take()
    data = await opt_in(c, "hist-e", {"epoch": "not-this-one", "offset": 0})
    assert data["recovered"] is False
    assert offsets(c.take()) == ["tidings:unrecovered"]


async def test_a_lost_bus_message_is_filled_before_the_next_goes_out(
    lossy: tuple[Node, set[int]],
) -> None:
    node, lost = lossy
    stock, opted = connect(node), connect(node)
    stock.take(), opted.take()
    await stock.subscribe("hist-g")
    await opt_in(opted, "hist-g")
    stock.take()
    lost.add(2)
    for n in range(1, 4):
        await publish(node, "hist-g", str(n))
    await _settle(node)
    assert [m["data"] for m in stock.take()] == ["1", "2", "3"]
    assert offsets(opted.take()) == [1, 2, 3]
    assert node.counters(APP).gaps_filled == 1


async def test_a_lost_last_publication_is_found_by_the_periodic_check(
    lossy: tuple[Node, set[int]],
) -> None:
    node, lost = lossy
    recovery = node._states[APP.id].recovery  # what the node's history check loop calls
    stock, opted = connect(node), connect(node)
    stock.take(), opted.take()
    await stock.subscribe("hist-last")
    await opt_in(opted, "hist-last")
    stock.take()
    lost.add(3)
    for n in range(1, 4):
        await publish(node, "hist-last", str(n))  # 3, the last, never reaches the node
    await _settle(node)
    assert [m["data"] for m in stock.take()] == ["1", "2"]
    await recovery.check()  # the channel spoke since the last check: not read yet
    await _settle(node)
    assert stock.take() == [] and node.counters(APP).gaps_filled == 0
    await recovery.check()  # quiet since: its position (3) is read, 3 is filled
    await _settle(node)
    assert [m["data"] for m in stock.take()] == ["3"]
    assert offsets(opted.take()) == [1, 2, 3]
    assert node.counters(APP).gaps_filled == 1
    await recovery.check()  # in step now: nothing more
    await publish(node, "hist-last", "4")
    await _settle(node)
    assert [m["data"] for m in stock.take()] == ["4"]
    assert node.counters(APP).gaps_filled == 1


async def test_a_gap_history_cannot_fill_closes_every_socket_with_4200(
    lossy: tuple[Node, set[int]],
) -> None:
    node, lost = lossy
    stock, opted = connect(node), connect(node)
    stock.take(), opted.take()
    await stock.subscribe("small-g")
    await opt_in(opted, "small-g")
    await publish(node, "small-g", "1")
    lost.update({2, 3, 4})
    for n in range(2, 6):
        await publish(node, "small-g", str(n))  # size 2: only 4 and 5 are kept
    await _settle(node)
    assert stock.closed is not None and stock.closed[0] == ErrorCode.RECONNECT
    assert opted.closed is not None and opted.closed[0] == ErrorCode.RECONNECT
    assert node.counters(APP).gaps_unfilled == 1


async def test_a_new_epoch_closes_opted_in_sockets_only(node: Node) -> None:
    stock, opted = connect(node), connect(node)
    stock.take(), opted.take()
    await stock.subscribe("hist-n")
    await opt_in(opted, "hist-n")
    message = b'{"event":"tick","channel":"hist-n","data":"x"}'
    node._deliver(APP.id, "hist-n", message, None, Position("another", 1))
    assert opted.closed is not None and opted.closed[0] == ErrorCode.RECONNECT
    assert stock.closed is None and stock.take()[-1]["data"] == "x"


async def _settle(node: Node) -> None:
    """Let the node's fill task run to its end."""
    for _ in range(20):
        await asyncio.sleep(0)
    node.outgoing.flush()


async def test_presence_keeps_its_roster_beside_the_position(node: Node) -> None:
    c = connect(node)
    c.take()
    channel_data = json.dumps({"user_id": "ann"})
    channel = "presence-hist-p"
    signature = sign(APP.secret, f"{c.socket_id}:{channel}:{channel_data}")
    data = {
        "channel": channel,
        "auth": f"{APP.key}:{signature}",
        "channel_data": channel_data,
        "tidings": {"v": 1},
    }
    await c.send_json({"event": "pusher:subscribe", "data": data})
    succeeded = json.loads(c.take()[0]["data"])
    assert succeeded["presence"]["ids"] == ["ann"]
    assert succeeded["tidings"]["offset"] == 0


async def test_history_out_of_reach_gives_a_stock_subscription(node: Node) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise HistoryUnavailable("the shared backend is unreachable")

    node.broker.history.position = unavailable  # type: ignore[method-assign]
    c = connect(node)
    c.take()
    subscribe = {"channel": "hist-down", "tidings": {"v": 1}}
    await c.send_json({"event": "pusher:subscribe", "data": subscribe})
    assert c.take() == [succeeded_plain("hist-down")]
    node._deliver(APP.id, "hist-down", b'{"event":"x","channel":"hist-down"}', None)
    assert c.take() == [{"event": "x", "channel": "hist-down"}]


def succeeded_plain(channel: str) -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


class GatedReads:
    """``broker.history.since`` that reads at once but answers only when the test opens
    the gate: publications made meanwhile are newer than the page."""

    def __init__(self, node: Node) -> None:
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()
        history = node.broker.history
        since = history.since

        async def gated(*args: Any, **kwargs: Any) -> Any:
            page = await since(*args, **kwargs)
            self.reading.set()
            await self.gate.wait()
            return page

        history.since = gated  # type: ignore[method-assign]


async def test_publications_during_the_read_follow_the_replay_once(node: Node) -> None:
    first = connect(node)
    first.take()
    epoch = (await opt_in(first, "hist-m"))["tidings"]["epoch"]
    await publish(node, "hist-m", "1")
    await node.detach(first)
    await publish(node, "hist-m", "2")
    reads = GatedReads(node)
    second = connect(node)
    second.take()
    recover = {"v": 1, "recover": {"epoch": epoch, "offset": 1}}
    subscribe = {"channel": "hist-m", "tidings": recover}
    joining = asyncio.ensure_future(
        second.send_json({"event": "pusher:subscribe", "data": subscribe})
    )
    await reads.reading.wait()
    await publish(node, "hist-m", "3")  # after the page was read: held, then sent
    await publish(node, "hist-m", "4")
    node.outgoing.flush()
    assert second.sent == []  # nothing reaches the socket before subscription_succeeded
    reads.gate.set()
    await joining
    received = second.take()
    assert received[0]["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(received[0]["data"])["recovered"] is True
    assert offsets(received[1:]) == [2, 3, 4]
    await publish(node, "hist-m", "5")
    assert offsets(second.take()) == [5]


async def test_unsubscribing_during_the_read_sends_nothing(node: Node) -> None:
    reads = GatedReads(node)
    c = connect(node)
    c.take()
    subscribe = {"channel": "hist-x", "tidings": {"v": 1, "recover": {"epoch": "e", "offset": 0}}}
    joining = asyncio.ensure_future(c.send_json({"event": "pusher:subscribe", "data": subscribe}))
    await reads.reading.wait()
    await c.send_json({"event": "pusher:unsubscribe", "data": {"channel": "hist-x"}})
    reads.gate.set()
    await joining
    await publish(node, "hist-x", "1")
    assert c.take() == []
    assert node.app_gauges(APP)[2] == 0  # no subscription left on this node


LIVE_APP = App(
    "777",
    "live-key",
    "live-secret",
    history=(HistoryRule("private-live.*", 100, 300.0),),
)


async def test_opt_in_on_a_live_channel_is_a_stock_subscription() -> None:
    """A live channel's snapshot is its recovery: the opt-in (even with a position to
    recover from) is ignored, and the socket gets the frames of one that did not opt in,
    while the channel's history is still kept (GET .../history, gap-filling)."""
    channel = "private-live.todo.list_id.9"
    node = Node(AppRegistry.of([LIVE_APP]), MemoryBroker(), NodeSettings(), clock=FakeClock())

    async def snapshot(app: App, name: str, socket_id: str) -> bytes:
        return b'{"rows": [], "version": 0}'

    node.live_snapshots = snapshot
    await node.start()
    try:
        stock, opted = FakeConnection(node, LIVE_APP), FakeConnection(node, LIVE_APP)
        for c in (stock, opted):
            node.attach(c)
            c.take()
        await node.trigger(LIVE_APP, Trigger("created", "{}", (channel,), None, ()))
        top = await node.history(LIVE_APP, channel, 0, 10)
        recover = {"epoch": top.position.epoch, "offset": 0}
        for c, tidings in [(stock, None), (opted, {"v": 1, "recover": recover})]:
            auth = sign(LIVE_APP.secret, f"{c.socket_id}:{channel}")
            data: dict[str, Any] = {"channel": channel, "auth": f"{LIVE_APP.key}:{auth}"}
            if tidings is not None:
                data["tidings"] = tidings
            await c.send_json({"event": "pusher:subscribe", "data": data})
        await _settle(node)
        await node.trigger(LIVE_APP, Trigger("updated", "{}", (channel,), None, ()))
        await _settle(node)
        frames = opted.take()
        assert [m["event"] for m in frames] == [
            "pusher_internal:subscription_succeeded",
            "tidings:snapshot",
            "updated",
        ]
        assert frames == stock.take()  # no position, no replay of "created", no offsets
        assert (await node.history(LIVE_APP, channel, 0, 10)).position.offset == 2
    finally:
        await node.close()
