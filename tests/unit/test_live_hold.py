"""core/live_hold.py and the node's hold: a live subscription's events wait for its snapshot.

The node runs over the real MemoryBroker with fake connections that record what a client
would read; the snapshot provider awaits an Event the test sets, so every test decides
what is published while the snapshot is being fetched.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry
from tidings.core.live_hold import LiveHold, SnapshotFailed, snapshot_message
from tidings.core.publication import Publication
from tidings.live_subscriptions import SnapshotResult
from tidings.node import Node
from tidings.protocol.auth import sign
from tidings.protocol.rest import Trigger
from tidings.protocol.session import Session

APP = App("1", "key", "secret", live_hold_max_messages=5, live_snapshot_timeout=2.0)
CHANNEL = "private-live.todo.list_id.5"
TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


# -- the hold itself -------------------------------------------------------------------------


def test_hold_keeps_publications_in_order_until_released() -> None:
    hold = LiveHold("1.1", CHANNEL, 10, 1000, lambda: None)
    hold.publish(Publication([b"a", b"b"]))
    hold.publish(Publication([b"c"]))
    assert hold.release() == [b"a", b"b", b"c"]
    hold.publish(Publication([b"d"]))  # released: a late publication is not kept
    assert len(hold) == 0


@pytest.mark.parametrize(
    ("messages", "size", "setting"),
    [(3, 1000, "live_hold_max_messages"), (10, 5, "live_snapshot_max_bytes")],
)
def test_hold_overflow_drops_everything_and_reports_once(
    messages: int, size: int, setting: str
) -> None:
    told: list[int] = []
    hold = LiveHold("1.1", CHANNEL, messages, size, lambda: told.append(1))
    for _ in range(5):
        hold.publish(Publication([b"abc"]))
    assert hold.overflowed == setting and told == [1] and len(hold) == 0
    with pytest.raises(RuntimeError):
        hold.release()


def test_snapshot_message_wraps_the_body_as_the_event_data() -> None:
    body = b'{"rows": [{"id": 1, "version": 3}], "version": 3}'
    message = json.loads(snapshot_message(CHANNEL, body, 1000))
    assert message["event"] == "tidings:snapshot" and message["channel"] == CHANNEL
    assert json.loads(message["data"]) == {"rows": [{"id": 1, "version": 3}], "version": 3}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"version": 1}', '"rows"'),
        (b'{"rows": [], "version": "1"}', '"version"'),
        (b'{"rows": [], "version": true}', '"version"'),
        (b'{"rows": [], "version": 1, "pad": "' + b"x" * 2000 + b'"}', "larger than 1024"),
    ],
)
def test_bad_snapshots_are_refused_with_the_reason(body: bytes, error: str) -> None:
    with pytest.raises(SnapshotFailed, match=error):
        snapshot_message(CHANNEL, body, 1024)


# -- the node --------------------------------------------------------------------------------


class Client:
    def __init__(self, node: Node, app: App = APP) -> None:
        self.session: Session = node.new_session(app)
        self.socket_id = self.session.socket_id
        self.app = app
        self.node = node
        self.sent: list[bytes] = []
        node.attach(self)
        self.sent.clear()  # pusher:connection_established

    def send(self, message: bytes) -> None:
        if self.node.outgoing:
            self.node.outgoing.flush()
        self.sent.append(message)

    def publish(self, publication: Publication) -> None:
        self.sent.extend(publication.messages)

    def close(self, code: int, reason: str) -> None:
        pass

    def events(self) -> list[tuple[str, Any]]:
        self.node.outgoing.flush()
        return [(m["event"], m.get("data")) for m in map(json.loads, self.sent)]

    async def subscribe(self, channel: str = CHANNEL) -> None:
        auth = f"{self.app.key}:{sign(self.app.secret, f'{self.socket_id}:{channel}')}"
        data = {"channel": channel, "auth": auth}
        await self.node.receive(self, json.dumps({"event": "pusher:subscribe", "data": data}))


class Provider:
    """A snapshot provider the test releases; records who asked."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.asked: list[tuple[str, str]] = []
        self.body = b'{"rows": [{"id": 1, "version": 1}], "version": 1}'
        self.error: Exception | None = None

    async def __call__(self, app: App, channel: str, socket_id: str) -> bytes:
        self.asked.append((channel, socket_id))
        await self.go.wait()
        if self.error is not None:
            raise self.error
        return self.body


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(AppRegistry.of([APP]), MemoryBroker())
    await node.start()
    yield node
    await node.close()


async def publish(node: Node, n: int, channel: str = CHANNEL) -> None:
    data = json.dumps({"n": n})
    await node.trigger(APP, Trigger("updated", data, (channel,), None, ()))


async def until(condition: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.005)


async def test_events_published_during_the_fetch_follow_the_snapshot(node: Node) -> None:
    provider = Provider()
    node.live_snapshots = provider
    watcher, client = Client(node), Client(node)
    await watcher.subscribe()
    provider.go.set()
    await until(lambda: any(e == "tidings:snapshot" for e, _ in watcher.events()))
    provider.go.clear()
    await client.subscribe()
    await until(lambda: provider.asked[-1:] == [(CHANNEL, client.socket_id)])
    for n in range(3):
        await publish(node, n)
    await asyncio.sleep(0)  # a tick: the watcher gets them now, the client does not
    assert [d for e, d in watcher.events() if e == "updated"][-3:] == [
        json.dumps({"n": n}) for n in range(3)
    ]
    assert [e for e, _ in client.events()] == ["pusher_internal:subscription_succeeded"]
    provider.go.set()
    await until(lambda: len(client.events()) == 5)
    await publish(node, 3)  # after the swap: straight to the connection
    events = client.events()
    assert [e for e, _ in events] == [
        "pusher_internal:subscription_succeeded",
        "tidings:snapshot",
        "updated",
        "updated",
        "updated",
        "updated",
    ]
    assert [json.loads(d)["n"] for e, d in events if e == "updated"] == [0, 1, 2, 3]
    assert not node.live_subscriptions
    stats = node.live_subscriptions.stats(APP)
    assert stats.snapshots[SnapshotResult.OK] == 2  # the watcher's and the client's
    assert sum(stats.snapshots.values()) == 2
    assert stats.released == 3


async def test_publication_pending_in_the_tick_of_the_swap_is_not_lost(node: Node) -> None:
    provider = Provider()
    node.live_snapshots = provider
    client = Client(node)
    await client.subscribe()
    await until(lambda: provider.asked)
    # Published in the very tick the snapshot is sent: still in the Coalescer.
    await publish(node, 1)
    provider.go.set()
    await publish(node, 2)
    await until(lambda: [e for e, _ in client.events()].count("updated") == 2)
    await asyncio.sleep(0.05)
    events = client.events()
    assert [e for e, _ in events][1] == "tidings:snapshot"
    assert [json.loads(d)["n"] for e, d in events if e == "updated"] == [1, 2]


@pytest.mark.parametrize("failure", ["raises", "garbage", "crash", "overflow"])
async def test_a_failed_snapshot_unsubscribes_with_snapshot_failed(
    node: Node, failure: str
) -> None:
    provider = Provider()
    node.live_snapshots = provider
    client = Client(node)
    await client.subscribe()
    await until(lambda: provider.asked)
    if failure == "raises":
        provider.error = SnapshotFailed("the app said 500")
    elif failure == "garbage":
        provider.body = b"<html>"
    elif failure == "crash":
        provider.error = ValueError("bug")
    else:
        for n in range(APP.live_hold_max_messages + 1):
            await publish(node, n)
    if failure != "overflow":
        await publish(node, 0)
        provider.go.set()
    await until(lambda: any(e == "pusher:subscription_error" for e, _ in client.events()))
    events = client.events()
    error = events[-1][1]
    assert error["type"] == "SnapshotFailed" and error["status"] == 500
    expected = {
        "raises": "the app said 500",
        "garbage": "not valid JSON",
        "crash": "provider failed",
        "overflow": "events or",
    }[failure]
    assert expected in error["error"]
    assert "updated" not in [e for e, _ in events]
    assert CHANNEL not in client.session.subscriptions
    assert node._states[APP.id].hub.count(CHANNEL) == 0
    stats = node.live_subscriptions.stats(APP)
    result = {
        "raises": SnapshotResult.REFUSED,
        "garbage": SnapshotResult.INVALID,
        "crash": SnapshotResult.ERROR,
        "overflow": SnapshotResult.OVERFLOW,
    }[failure]
    assert {r: n for r, n in stats.snapshots.items() if n} == {result: 1}
    overflowed = 1 if failure == "overflow" else 0
    assert stats.overflows == {"live_hold_max_messages": overflowed, "live_snapshot_max_bytes": 0}
    assert stats.released == 0
    assert await node.subscription_count(APP, CHANNEL) == 0
    await publish(node, 99)
    await asyncio.sleep(0.01)
    assert client.events() == events


async def test_a_slow_snapshot_times_out(node: Node) -> None:
    provider = Provider()
    node.live_snapshots = provider
    client = Client(node)
    started = asyncio.get_running_loop().time()
    await client.subscribe()
    await until(lambda: any(e == "pusher:subscription_error" for e, _ in client.events()))
    assert asyncio.get_running_loop().time() - started >= APP.live_snapshot_timeout
    assert "no snapshot within 2 s" in client.events()[-1][1]["error"]
    assert node.live_subscriptions.stats(APP).snapshots[SnapshotResult.TIMEOUT] == 1


async def test_unsubscribing_or_closing_mid_fetch_leaves_nothing(node: Node) -> None:
    provider = Provider()
    node.live_snapshots = provider
    leaver, closer = Client(node), Client(node)
    await leaver.subscribe()
    await closer.subscribe()
    await until(lambda: len(provider.asked) == 2)
    assert node.live_subscriptions.waiting(APP) == 2
    unsubscribe = {"event": "pusher:unsubscribe", "data": {"channel": CHANNEL}}
    await node.receive(leaver, json.dumps(unsubscribe))
    await node.detach(closer)
    state = node._states[APP.id]
    assert not node.live_subscriptions and state.hub.count(CHANNEL) == 0
    assert node.live_subscriptions.waiting(APP) == 0
    provider.go.set()
    await asyncio.sleep(0.05)
    assert "tidings:snapshot" not in [e for e, _ in leaver.events() + closer.events()]
    assert await node.subscription_count(APP, CHANNEL) == 0
    assert not [t for t in node._tasks if not t.done()]
    snapshots = node.live_subscriptions.stats(APP).snapshots
    assert {r: n for r, n in snapshots.items() if n} == {SnapshotResult.ABANDONED: 2}


async def test_a_snapshot_for_a_closing_connection_is_neither_sent_nor_refused(
    node: Node,
) -> None:
    # detach marks the session closed, then leaves its channels one await at a time: a
    # snapshot that arrives in between is abandoned, not reported as a failure.
    provider = Provider()
    node.live_snapshots = provider
    client = Client(node)
    await client.subscribe()
    await until(lambda: provider.asked)
    client.session.closed = True
    provider.go.set()
    snapshots = node.live_subscriptions.stats(APP).snapshots
    await until(lambda: snapshots[SnapshotResult.ABANDONED] == 1)
    assert [e for e, _ in client.events()] == ["pusher_internal:subscription_succeeded"]
    assert sum(snapshots.values()) == 1
    await node.detach(client)
    assert not node.live_subscriptions


async def test_without_a_provider_live_channels_are_plain_private(node: Node) -> None:
    client = Client(node)
    await client.subscribe()
    await publish(node, 1)
    assert [e for e, _ in client.events()] == ["pusher_internal:subscription_succeeded", "updated"]


async def test_provider_serves_only_its_apps(node: Node) -> None:
    node.live_snapshots = Provider()
    node.live_apps = frozenset({"another"})
    client = Client(node)
    await client.subscribe()
    await publish(node, 1)
    assert [e for e, _ in client.events()] == ["pusher_internal:subscription_succeeded", "updated"]


async def test_fetches_beyond_the_app_concurrency_wait_their_turn() -> None:
    app = App("2", "key2", "secret2", live_snapshot_concurrency=2, live_snapshot_timeout=5.0)
    node = Node(AppRegistry.of([app]), MemoryBroker())
    await node.start()
    try:
        running = 0
        most = 0
        go = asyncio.Event()

        async def provider(app: App, channel: str, socket_id: str) -> bytes:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await go.wait()
            running -= 1
            return b'{"rows": [], "version": 0}'

        node.live_snapshots = provider
        clients = []
        for _ in range(5):
            client = Client(node, app)
            await client.subscribe()
            clients.append(client)
        await until(lambda: running == 2)
        await asyncio.sleep(0.05)
        assert running == 2  # the other three wait for a slot
        go.set()
        await until(
            lambda: all(any(e == "tidings:snapshot" for e, _ in c.events()) for c in clients)
        )
        assert most == 2
    finally:
        await node.close()
