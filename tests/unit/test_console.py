"""console/: the tap costs nothing while nobody watches; rate limits, signed sessions,
the failed-login limit and the node-message path, on a real Node over the MemoryBroker."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import orjson
import pytest

from tidings.brokers.control import Console
from tidings.brokers.memory import MemoryBroker
from tidings.brokers.node_messages import NodeMessages, UnknownNodeMessage
from tidings.config import ConfigError, load_settings
from tidings.console.auth import FAILURE_WINDOW, MAX_FAILURES, LoginLimit, Sessions
from tidings.console.streams import Stream
from tidings.console.tap import Tap
from tidings.console.watch import TAG, BadConsoleMessage, Watch
from tidings.core.apps import App, AppRegistry
from tidings.core.publication import Publication
from tidings.node import Node
from tidings.protocol.rest import Trigger
from tidings.protocol.session import Session

APP = App("12345", "app-key", "app-secret", client_events=True)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeConnection:
    def __init__(self, node: Node) -> None:
        self.session: Session = node.new_session(APP)
        self.socket_id = self.session.socket_id
        self.app = APP
        self.sent: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.sent.append(message)

    def publish(self, publication: Publication) -> None:
        self.sent.extend(publication.messages)

    def close(self, code: int, reason: str) -> None:
        pass


async def traffic(node: Node) -> None:
    """A connection that subscribes, sends a client event, is published to and leaves."""
    connection = FakeConnection(node)
    node.attach(connection)
    await node.receive(
        connection, json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}})
    )
    await node.receive(connection, json.dumps({"event": "pusher:subscribe", "data": {}}))
    await node.trigger(APP, Trigger("hello", "{}", ("news",), None, ()), "rest")
    await node.detach(connection, 1000)


def tap_allocations(snapshot: tracemalloc.Snapshot) -> int:
    traces = snapshot.filter_traces([tracemalloc.Filter(True, "*/tidings/console/tap.py")])
    return sum(stat.count for stat in traces.statistics("filename"))


async def test_nobody_watching_means_no_tap_and_no_record() -> None:
    node = Node(AppRegistry.of([APP]), MemoryBroker())
    watch = Watch(node)  # the console is enabled, but nobody watches
    await node.start()
    try:
        assert node.tap(APP.id) is None
        tracemalloc.start()
        try:
            await traffic(node)
            idle = tap_allocations(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        assert idle == 0
        assert node.tap(APP.id) is None

        # The same traffic while a stream watches: a tap, and every record.
        stream = Stream(APP.id, "session")
        assert watch.open_stream(stream)
        assert isinstance(node.tap(APP.id), Tap)
        tracemalloc.start()
        try:
            await traffic(node)
            watched = tap_allocations(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        assert watched > 0
        records = [json.loads(line[6:]) for line in stream.take("me").decode().split("\n\n")[:-1]]
        assert [r["type"] for r in records] == [
            "connection",
            "subscribed",
            "refused",
            "api_message",
            "disconnection",
            "unsubscribed",
        ]
        assert records[3]["source"] == "rest"
        assert records[4]["by"] == "client" and records[4]["code"] == 1000

        watch.close_stream(stream)
        assert node.tap(APP.id) is None  # the last listener gone: nothing recorded again
    finally:
        await watch.close()
        await node.close()


def test_the_tap_admits_rate_records_a_second_and_counts_the_rest() -> None:
    clock = FakeClock()
    records: list[dict[str, Any]] = []
    tap = Tap(APP.id, "node-a", records.append, rate=3, clock=clock)
    for i in range(5):
        tap.connection(f"1.{i}", "ws")
    assert len(records) == 3 and tap.take_dropped() == 2 and tap.dropped == 0
    assert records[0] == {
        "type": "connection",
        "time": int(clock.now * 1000),
        "node": "node-a",
        "socket_id": "1.0",
        "transport": "ws",
    }
    clock.now += 1
    tap.client_event("c", "client-x", "d" * 1500, "1.0", None)
    assert records[-1]["truncated"] is True and len(records[-1]["data"]) == 1000
    assert "user_id" not in records[-1]


def test_a_stream_keeps_its_newest_records_and_counts_the_rest() -> None:
    stream = Stream(APP.id, "session", channel="news", limit=2)
    for i in range(4):
        record = {"type": "subscribed", "channel": "news", "n": i}
        stream.offer(record, json.dumps(record).encode())
    stream.offer({"type": "subscribed", "channel": "other"}, b"other")
    taken = stream.take("node-a").decode()
    assert '"count":2' in taken and '"n": 2' in taken and '"n": 3' in taken
    assert "other" not in taken
    assert stream.take("node-a") == b""


def test_sessions_are_signed_expire_and_can_be_revoked() -> None:
    clock = FakeClock()
    sessions = Sessions(b"k" * 32, clock)
    token, grant = sessions.issue(("12345",))
    checked = sessions.check(token)
    assert checked is not None and checked.allows("12345") and not checked.allows("2")
    every, _ = sessions.issue(None)
    assert (found := sessions.check(every)) is not None and found.allows("anything")
    # Another server's key, a changed payload, garbage: refused.
    assert Sessions(b"x" * 32, clock).check(token) is None
    payload, signature = token.split(".")
    assert sessions.check(payload[:-2] + "xx." + signature) is None
    for garbage in ("", ".", "a.b.c", "not a token", "é.é"):
        assert sessions.check(garbage) is None
    # The CSRF token belongs to its session.
    assert sessions.csrf_ok(token, sessions.csrf(token))
    assert not sessions.csrf_ok(token, sessions.csrf(every))
    assert not sessions.csrf_ok(token, None)
    sessions.revoke(grant.session_id, grant.expires)
    assert sessions.check(token) is None
    clock.now += 8 * 3600
    assert sessions.check(every) is None  # expired


def test_failed_logins_are_limited_per_address() -> None:
    clock = FakeClock()
    limit = LoginLimit(clock)
    for _ in range(MAX_FAILURES):
        assert limit.retry_after("a") == 0
        limit.failed("a")
    assert 0 < limit.retry_after("a") <= FAILURE_WINDOW
    assert limit.retry_after("b") == 0
    clock.now += FAILURE_WINDOW
    assert limit.retry_after("a") == 0


async def test_node_messages_go_to_the_handler_of_their_first_byte() -> None:
    broker = MemoryBroker()
    messages = NodeMessages(broker.control)
    got: list[bytes] = []

    async def handler(payload: bytes) -> None:
        got.append(payload)

    messages.handle(b"{", handler)
    await broker.control.to_node(broker.node_id, b'{"t":"x"}')
    assert got == [b'{"t":"x"}']
    for unknown in (b"Zzz", b"", b"\xff"):
        with pytest.raises(UnknownNodeMessage):
            await messages.dispatch(unknown)


async def test_garbage_batches_and_control_data_are_refused() -> None:
    node = Node(AppRegistry.of([APP]), MemoryBroker())
    watch = Watch(node)
    for payload in (
        TAG + b"{not json",
        TAG + b"[1]",
        TAG + b'{"a": "12345"}',
        TAG + b'{"a": "12345", "n": "b", "r": 3}',
        TAG + b'{"a": "12345", "n": "b", "s": [1, "x"]}',
    ):
        with pytest.raises(BadConsoleMessage):
            await watch.on_node_message(payload)
    for data in ("", "[]", '{"z": 1}', '{"w": 5}'):
        with pytest.raises(BadConsoleMessage):
            watch.on_control(APP.id, Console(data))
    # A good batch from another node reaches this node's listener.
    stream = Stream(APP.id, "session")
    watch.streams[APP.id] = {stream}
    record = {"type": "connection", "time": 1, "node": "b", "socket_id": "1.2", "transport": "ws"}
    await watch.on_node_message(TAG + orjson.dumps({"a": APP.id, "n": "b", "r": [record, 7]}))
    assert json.loads(stream.take("me").decode()[6:]) == record


def test_a_short_console_token_is_refused_without_being_shown() -> None:
    token = "short-s3cret"
    with pytest.raises(ConfigError) as refused:
        load_settings(None, env={"TIDINGS_CONSOLE": "1", "TIDINGS_CONSOLE_TOKEN": token})
    assert "console_token" in str(refused.value) and token not in str(refused.value)
    good = "a-long-enough-operator-token"
    settings = load_settings(None, env={"TIDINGS_CONSOLE": "1", "TIDINGS_CONSOLE_TOKEN": good})
    assert settings.console and settings.console_token == good
    assert good not in repr(settings)
