"""node.py: the Node driven by fake connections over the real MemoryBroker.

Each fake connection records the Pusher messages the node writes to it, sent to it alone
or published to its channels, so the tests assert what a client would read.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tidings.brokers.control import UserOffline, UserOnline
from tidings.brokers.memory import MemoryBroker, MemoryPresence, MemorySubscriptions
from tidings.core.apps import App, AppRegistry
from tidings.core.publication import Publication
from tidings.core.webhooks import WebhookTarget
from tidings.node import BackendRateLimited, Node, NodeSettings, _CallSoon
from tidings.protocol.auth import sign
from tidings.protocol.errors import ErrorCode
from tidings.protocol.rest import Trigger
from tidings.protocol.session import Member, Session

KEY = "app-key"
SECRET = "app-secret"
APP = App(
    "12345", KEY, SECRET, client_events=True, subscription_count=False, max_presence_members=3
)
COUNTING = App("23456", "count-key", "count-secret", subscription_count=True)
DISABLED = App("34567", "disabled-key", "disabled-secret", enabled=False)
SMALL = App("45678", "small-key", "small-secret", max_connections=1)
# Every wait is bounded by TIMEOUT, scaled for slow CI machines (as in tests/conftest.py).
TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
# Longer than the node's 50 ms subscription_count coalescing delay.
FLUSH = TIMEOUT / 25


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeConnection:
    def __init__(self, node: Node, app: App) -> None:
        self.session: Session = node.new_session(app)
        self.socket_id = self.session.socket_id
        self.app = app
        self.node = node
        self.sent: list[bytes] = []  # Pusher messages (JSON), in order
        self.closed: tuple[int, str] | None = None

    def send(self, message: bytes) -> None:
        if self.node.outgoing:  # as the real connections do: earlier publications first
            self.node.outgoing.flush()
        self.sent.append(message)

    def publish(self, publication: Publication) -> None:
        self.sent.extend(publication.messages)

    def close(self, code: int, reason: str) -> None:
        if self.node.outgoing:
            self.node.outgoing.flush()
        self.closed = (code, reason)

    def take(self) -> list[dict[str, Any]]:
        """Every message received since the last take(), counting the publications still
        waiting for the end of this loop tick."""
        self.node.outgoing.flush()
        messages = [json.loads(message) for message in self.sent]
        self.sent.clear()
        return messages

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.node.receive(self, json.dumps(message))

    async def subscribe(self, channel: str, channel_data: str | None = None) -> None:
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            to_sign = f"{self.socket_id}:{channel}"
            if channel_data is not None:
                to_sign += f":{channel_data}"
                data["channel_data"] = channel_data
            data["auth"] = f"{self.app.key}:{sign(self.app.secret, to_sign)}"
        await self.send_json({"event": "pusher:subscribe", "data": data})

    async def join_presence(self, channel: str, user_id: str, info: Any = None) -> None:
        await self.subscribe(channel, json.dumps({"user_id": user_id, "user_info": info}))

    async def signin(self, user_id: str, watchlist: list[str] | None = None) -> None:
        user: dict[str, Any] = {"id": user_id}
        if watchlist is not None:
            user["watchlist"] = watchlist
        user_data = json.dumps(user)
        signature = sign(self.app.secret, f"{self.socket_id}::user::{user_data}")
        auth = f"{self.app.key}:{signature}"
        await self.send_json(
            {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def node(clock: FakeClock) -> AsyncIterator[Node]:
    registry = AppRegistry.of([APP, COUNTING, DISABLED, SMALL])
    node = Node(registry, MemoryBroker(), NodeSettings(max_connections=10), clock=clock)
    await node.start()
    yield node
    await node.close()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (at most TIMEOUT) for the node's background tasks to make ``condition`` true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        assert loop.time() < deadline, "condition not met within TIMEOUT"
        await asyncio.sleep(0.01)


def connect(node: Node, app: App = APP) -> FakeConnection:
    connection = FakeConnection(node, app)
    node.attach(connection)
    return connection


def succeeded(channel: str, data: str = "{}") -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}


EXISTING_NEWS = {
    "event": "pusher:error",
    "data": {"code": None, "message": "Existing subscription to channel news"},
}


def presence_data(members: dict[str, Any]) -> dict[str, Any]:
    return {"presence": {"ids": list(members), "hash": members, "count": len(members)}}


def event_data(message: dict[str, Any]) -> Any:
    return json.loads(message["data"])


# -- connecting ---------------------------------------------------------------------------


async def test_attach_sends_connection_established(node: Node) -> None:
    connection = FakeConnection(node, APP)
    node.attach(connection)
    [message] = connection.sent
    socket_id = connection.socket_id
    payload = (
        '{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"'
        + socket_id
        + '\\",\\"activity_timeout\\":120}"}'
    ).encode()
    assert message == payload
    assert node.connection_count == 1
    assert node.connections() == [connection]


async def test_socket_ids_are_pusher_shaped_and_unique(node: Node) -> None:
    ids = {node.new_session(APP).socket_id for _ in range(200)}
    assert len(ids) == 200
    for socket_id in ids:
        left, dot, right = socket_id.partition(".")
        assert dot and left.isdigit() and right.isdigit()


async def test_ping_pong_literal_frame(node: Node) -> None:
    connection = connect(node)
    connection.sent.clear()
    await node.receive(connection, '{"event":"pusher:ping","data":{}}')
    assert connection.sent == [b'{"event":"pusher:pong","data":"{}"}']


async def test_malformed_frame_gets_error_and_stays_open(node: Node) -> None:
    connection = connect(node)
    connection.take()
    await node.receive(connection, "not json")
    assert connection.take() == [
        {"event": "pusher:error", "data": {"code": None, "message": "message is not valid JSON"}}
    ]
    assert connection.closed is None


@pytest.mark.parametrize(
    ("app", "code"),
    [(APP, None), (DISABLED, ErrorCode.APP_DISABLED)],
)
async def test_refusal_by_app(node: Node, app: App, code: ErrorCode | None) -> None:
    assert node.refusal(app) == code


async def test_refusal_over_app_quota(node: Node) -> None:
    assert node.refusal(SMALL) is None
    connection = connect(node, SMALL)
    assert node.refusal(SMALL) == ErrorCode.OVER_CONNECTION_QUOTA == 4004
    assert node.refusal(APP) is None  # the quota is per app
    await node.detach(connection)
    assert node.refusal(SMALL) is None


async def test_refusal_over_node_capacity(node: Node) -> None:
    connections = [connect(node) for _ in range(10)]
    assert node.refusal(APP) == ErrorCode.OVER_CAPACITY == 4100
    await node.detach(connections[0])
    assert node.refusal(APP) is None


async def test_drain_refuses_and_closes_with_4200(node: Node) -> None:
    a, b = connect(node), connect(node, COUNTING)
    await node.drain()
    assert node.refusal(APP) == ErrorCode.RECONNECT
    assert a.closed is not None and a.closed[0] == 4200
    assert b.closed is not None and b.closed[0] == 4200


# -- subscriptions ------------------------------------------------------------------------


async def test_subscribe_public_and_private(node: Node) -> None:
    connection = connect(node)
    connection.take()
    await connection.subscribe("news")
    await connection.subscribe("private-a")
    assert connection.take() == [succeeded("news"), succeeded("private-a")]
    assert await node.channels(APP) == {"news": 1, "private-a": 1}


async def test_subscription_error_keeps_the_connection(node: Node) -> None:
    connection = connect(node)
    connection.take()
    await connection.send_json(
        {"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": "app-key:00"}}
    )
    assert connection.take() == [
        {
            "event": "pusher:subscription_error",
            "channel": "private-a",
            "data": {
                "type": "AuthError",
                "error": "Invalid signature: Expected HMAC SHA256 hex digest of"
                f" {connection.socket_id}:private-a, but got 00",
                "status": 401,
            },
        }
    ]
    assert await node.channels(APP) == {}
    await connection.subscribe("news")
    assert connection.take() == [succeeded("news")]


async def test_unsubscribe(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("news")
    await b.subscribe("news")
    await a.send_json({"event": "pusher:unsubscribe", "data": {"channel": "news"}})
    await a.send_json({"event": "pusher:unsubscribe", "data": {"channel": "news"}})
    assert await node.channels(APP) == {"news": 1}
    a.take()
    await node.trigger(APP, Trigger("e", "d", ("news",), None, ()))
    assert a.take() == []
    assert b.take()[-1] == {"event": "e", "channel": "news", "data": "d"}


async def test_resubscribe_is_an_error_without_a_second_subscriber(node: Node) -> None:
    connection = connect(node)
    connection.take()
    await connection.subscribe("news")
    await connection.subscribe("news")
    assert connection.take() == [succeeded("news"), EXISTING_NEWS]
    assert await node.channels(APP) == {"news": 1}
    await node.trigger(APP, Trigger("e", "d", ("news",), None, ()))
    assert len(connection.take()) == 1


# -- presence -----------------------------------------------------------------------------


async def test_presence_member_added_once_per_user(node: Node) -> None:
    ann1, bob, ann2 = connect(node), connect(node), connect(node)
    for c in (ann1, bob, ann2):
        c.take()
    await ann1.join_presence("presence-room", "ann", {"name": "Ann"})
    assert [event_data(m) for m in ann1.take()] == [presence_data({"ann": {"name": "Ann"}})]

    await bob.join_presence("presence-room", "bob")
    assert bob.take() == [
        succeeded(
            "presence-room",
            json.dumps(presence_data({"ann": {"name": "Ann"}, "bob": None}), separators=(",", ":")),
        )
    ]
    assert ann1.take() == [
        {
            "event": "pusher_internal:member_added",
            "channel": "presence-room",
            "data": '{"user_id":"bob","user_info":null}',
        }
    ]

    # Ann's second socket: no member_added for anyone.
    await ann2.join_presence("presence-room", "ann", {"name": "Ann"})
    assert [event_data(m) for m in ann2.take()] == [
        presence_data({"ann": {"name": "Ann"}, "bob": None})
    ]
    assert ann1.take() == [] and bob.take() == []
    assert await node.members(APP, "presence-room") == [
        Member("ann", {"name": "Ann"}),
        Member("bob"),
    ]


async def test_presence_member_removed_only_on_last_socket(node: Node) -> None:
    ann1, ann2, bob = connect(node), connect(node), connect(node)
    await ann1.join_presence("presence-room", "ann")
    await ann2.join_presence("presence-room", "ann")
    await bob.join_presence("presence-room", "bob")
    for c in (ann1, ann2, bob):
        c.take()

    await ann1.send_json({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}})
    assert bob.take() == [] and ann2.take() == []

    await node.detach(ann2)
    assert bob.take() == [
        {
            "event": "pusher_internal:member_removed",
            "channel": "presence-room",
            "data": '{"user_id":"ann"}',
        }
    ]
    assert await node.members(APP, "presence-room") == [Member("bob")]


async def test_presence_numeric_user_id(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("presence-room", '{"user_id":7}')
    a.take()
    b.take()
    await b.subscribe("presence-room", '{"user_id":8}')
    assert a.take()[0]["data"] == '{"user_id":"8","user_info":null}'
    assert event_data(b.take()[0])["presence"]["ids"] == ["7", "8"]


async def test_presence_resubscribe_no_second_member_added(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.join_presence("presence-room", "ann")
    await b.join_presence("presence-room", "bob")
    a.take()
    b.take()
    await b.join_presence("presence-room", "bob")
    # Pusher's answer to a duplicate subscribe; no second roster.
    assert b.take() == [
        {
            "event": "pusher:error",
            "data": {"code": None, "message": "Existing subscription to channel presence-room"},
        }
    ]
    assert a.take() == []


async def test_presence_channel_full(node: Node) -> None:
    connections = [connect(node) for _ in range(4)]
    for i, connection in enumerate(connections[:3]):
        await connection.join_presence("presence-room", f"u{i}")
    late = connections[3]
    late.take()
    await late.join_presence("presence-room", "u3")
    assert late.take() == [
        {
            "event": "pusher:subscription_error",
            "channel": "presence-room",
            "data": {
                "type": "LimitReached",
                "error": "presence channel full (3 members)",
                "status": 4100,
            },
        }
    ]
    assert "presence-room" not in late.session.subscriptions
    assert await node.subscription_count(APP, "presence-room") == 3
    # Another socket of a member already present still gets in.
    extra = connect(node)
    extra.take()
    await extra.join_presence("presence-room", "u0")
    assert extra.take()[0]["event"] == "pusher_internal:subscription_succeeded"


# -- client events ------------------------------------------------------------------------


async def test_client_event_not_echoed(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("private-chat")
    await b.subscribe("private-chat")
    a.take()
    b.take()
    await a.send_json({"event": "client-hi", "channel": "private-chat", "data": {"x": 1}})
    assert a.take() == []
    assert b.take() == [{"event": "client-hi", "channel": "private-chat", "data": '{"x":1}'}]


async def test_client_event_on_presence_carries_user_id(node: Node) -> None:
    ann1, ann2, bob = connect(node), connect(node), connect(node)
    await ann1.join_presence("presence-room", "ann")
    await ann2.join_presence("presence-room", "ann")
    await bob.join_presence("presence-room", "bob")
    for c in (ann1, ann2, bob):
        c.take()
    await ann1.send_json({"event": "client-hi", "channel": "presence-room", "data": "yo"})
    expected = {"event": "client-hi", "channel": "presence-room", "data": "yo", "user_id": "ann"}
    assert ann1.take() == []
    assert ann2.take() == [expected]  # the user's other socket is another subscriber
    assert bob.take() == [expected]


async def test_client_event_rate_limited(node: Node, clock: FakeClock) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("private-chat")
    await b.subscribe("private-chat")
    a.take()
    b.take()
    for _ in range(11):
        await a.send_json({"event": "client-x", "channel": "private-chat", "data": {}})
    assert len(b.take()) == 10
    assert a.take() == [
        {
            "event": "pusher:error",
            "data": {"code": 4301, "message": "Client event rejected due to rate limit"},
        }
    ]
    assert a.closed is None
    clock.now += 1.0
    await a.send_json({"event": "client-x", "channel": "private-chat", "data": {}})
    assert len(b.take()) == 1


# -- cache channels -----------------------------------------------------------------------


async def test_cache_channel_miss_then_hit(node: Node, clock: FakeClock) -> None:
    first = connect(node)
    first.take()
    await first.subscribe("cache-news")
    assert first.take() == [
        succeeded("cache-news"),
        {"event": "pusher:cache_miss", "channel": "cache-news"},
    ]

    await node.trigger(APP, Trigger("update", '{"v":1}', ("cache-news",), None, ()))
    event = {"event": "update", "channel": "cache-news", "data": '{"v":1}'}
    assert first.take() == [event]

    second = connect(node)
    second.take()
    await second.subscribe("cache-news")
    assert second.take() == [succeeded("cache-news"), event]
    cached = await node.cached(APP, "cache-news")
    assert cached is not None and cached.expires_at == clock.now + APP.cache_ttl

    # After cache_ttl the event is gone.
    clock.now += APP.cache_ttl
    third = connect(node)
    third.take()
    await third.subscribe("cache-news")
    assert third.take()[-1] == {"event": "pusher:cache_miss", "channel": "cache-news"}


async def test_client_events_are_not_cached(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("private-cache-c")
    await a.send_json({"event": "client-x", "channel": "private-cache-c", "data": "x"})
    b.take()
    await b.subscribe("private-cache-c")
    assert b.take()[-1] == {"event": "pusher:cache_miss", "channel": "private-cache-c"}


async def test_presence_cache_channel_roster_then_miss(node: Node) -> None:
    a = connect(node)
    a.take()
    await a.join_presence("presence-cache-room", "ann")
    messages = a.take()
    assert [m["event"] for m in messages] == [
        "pusher_internal:subscription_succeeded",
        "pusher:cache_miss",
    ]


# -- trigger ------------------------------------------------------------------------------


async def test_trigger_many_channels_and_exclude(node: Node) -> None:
    a, b = connect(node), connect(node)
    await a.subscribe("c1")
    await a.subscribe("c2")
    await b.subscribe("c1")
    a.take()
    b.take()
    await node.trigger(APP, Trigger("e", "d", ("c1", "c2", "nobody"), b.socket_id, ()))
    assert a.take() == [
        {"event": "e", "channel": "c1", "data": "d"},
        {"event": "e", "channel": "c2", "data": "d"},
    ]
    assert b.take() == []


async def test_memory_trigger_skips_channels_no_local_subscriber_can_get(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The memory broker delivers to this node alone: nothing is published (nor built) for
    # a channel nobody here subscribes to. Every publication is counted all the same.
    a = connect(node)
    await a.subscribe("watched")
    a.take()
    published: list[str] = []
    real = node.broker.pubsub.publish

    def publish(app_id: str, channel: str, message: bytes, exclude: str | None) -> Any:
        published.append(channel)
        return real(app_id, channel, message, exclude)

    monkeypatch.setattr(node.broker.pubsub, "publish", publish)
    before = node.counters(APP).publications
    await node.trigger_all(
        APP,
        [
            Trigger("e", "1", ("nobody",), None, ()),
            Trigger("e", "2", ("watched", "nobody-else"), None, ()),
        ],
    )
    assert published == ["watched"]
    assert a.take() == [{"event": "e", "channel": "watched", "data": "2"}]
    assert node.counters(APP).publications == before + 3


async def test_backend_rate(node: Node, clock: FakeClock) -> None:
    app = App("99", "k", "s", max_backend_events_per_second=3)
    rate_node = Node(AppRegistry.of([app]), MemoryBroker(), clock=clock, wall_clock=clock)
    await rate_node.check_backend_rate(app, 2)
    await rate_node.check_backend_rate(app, 1)
    with pytest.raises(BackendRateLimited):
        await rate_node.check_backend_rate(app, 1)
    clock.now += 1.0
    await rate_node.check_backend_rate(app, 3)
    with pytest.raises(BackendRateLimited):
        await rate_node.check_backend_rate(app, 1)


# -- subscription_count -------------------------------------------------------------------


async def test_subscription_count_coalesced(node: Node) -> None:
    connections = [connect(node, COUNTING) for _ in range(3)]
    for c in connections:
        await c.subscribe("news")
    await eventually(lambda: all(b"subscription_count" in c.sent[-1] for c in connections))
    count3 = {
        "event": "pusher_internal:subscription_count",
        "channel": "news",
        "data": '{"subscription_count":3}',
    }
    for c in connections:
        assert [m for m in c.take() if m["event"] == "pusher_internal:subscription_count"] == [
            count3
        ]

    await node.detach(connections[0])
    await eventually(lambda: bool(connections[1].sent))
    await asyncio.sleep(FLUSH)  # and nothing more follows
    assert connections[1].take() == [{**count3, "data": '{"subscription_count":2}'}]
    assert connections[0].take() == []


async def test_subscription_count_off_by_default_and_never_on_presence(node: Node) -> None:
    plain = connect(node)
    await plain.subscribe("news")
    counting = connect(node, COUNTING)
    await counting.join_presence("presence-room", "ann")
    await asyncio.sleep(FLUSH)
    assert all(m["event"] != "pusher_internal:subscription_count" for m in plain.take())
    assert all(m["event"] != "pusher_internal:subscription_count" for m in counting.take())


# -- signin, user channels and watchlists -------------------------------------------------


async def test_signin_and_server_to_user_events(node: Node) -> None:
    u1a, u1b, u2 = connect(node), connect(node), connect(node)
    await u1a.signin("u1")
    await u1b.signin("u1")
    await u2.signin("u2")
    [success] = u1a.take()[1:]
    assert success["event"] == "pusher:signin_success"
    assert event_data(success) == {"user_data": '{"id": "u1"}'}
    u1b.take()
    u2.take()
    await node.trigger(APP, Trigger("note", "hi", ("#server-to-user-u1",), None, ()))
    note = {"event": "note", "channel": "#server-to-user-u1", "data": "hi"}
    assert u1a.take() == [note]
    assert u1b.take() == [note]
    assert u2.take() == []
    # Subscribing to one's own user channel is acknowledged and changes nothing.
    await u1a.subscribe("#server-to-user-u1")
    assert u1a.take() == [succeeded("#server-to-user-u1")]
    await node.trigger(APP, Trigger("note", "hi", ("#server-to-user-u1",), None, ()))
    assert u1a.take() == [note]
    # User channels are internal: not listed.
    assert await node.channels(APP) == {}


async def test_signin_bad_signature_closes_4009(node: Node) -> None:
    connection = connect(node)
    connection.take()
    await connection.send_json(
        {"event": "pusher:signin", "data": {"auth": "app-key:00", "user_data": '{"id":"u1"}'}}
    )
    problem = (
        "Invalid signature: Expected HMAC SHA256 hex digest of "
        f'{connection.socket_id}::user::{{"id":"u1"}}, but got 00'
    )
    assert connection.take() == [
        {"event": "pusher:error", "data": {"code": 4009, "message": problem}}
    ]
    assert connection.closed == (4009, problem)


def watchlist_event(name: str, user_ids: list[str]) -> dict[str, Any]:
    data = {"events": [{"name": name, "user_ids": user_ids}]}
    return {
        "event": "pusher_internal:watchlist_events",
        "data": json.dumps(data, separators=(",", ":")),
    }


async def test_watchlist_online_offline(node: Node) -> None:
    already = connect(node)
    await already.signin("u1")
    watcher = connect(node)
    watcher.take()
    await watcher.signin("w", watchlist=["u1", "u2"])
    messages = watcher.take()
    assert [m["event"] for m in messages] == [
        "pusher:signin_success",
        "pusher_internal:watchlist_events",
    ]
    assert messages[1] == watchlist_event("online", ["u1"])

    u2a, u2b = connect(node), connect(node)
    await u2a.signin("u2")
    assert watcher.take() == [watchlist_event("online", ["u2"])]
    await u2b.signin("u2")
    assert watcher.take() == []  # not the user's first socket

    await node.detach(u2a)
    assert watcher.take() == []
    await node.detach(u2b)
    assert watcher.take() == [watchlist_event("offline", ["u2"])]

    await node.detach(watcher)
    await node.detach(already)  # nobody watches any more: nothing to send, nothing raised


class SlowSnapshotPresence(MemoryPresence):
    """users_online answers only when released, as a Redis round trip might: cluster
    events about the watched users can arrive in between."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def users_online(self, app_id: str, user_ids: list[str]) -> list[str]:
        answer = await super().users_online(app_id, user_ids)
        self.asked.set()
        await self.release.wait()
        return answer


async def test_watchlist_events_during_the_signin_snapshot_are_told_once(
    clock: FakeClock,
) -> None:
    broker = MemoryBroker()
    broker.presence = presence = SlowSnapshotPresence()
    node = Node(AppRegistry.of([APP]), broker, clock=clock)
    await node.start()
    try:
        for user in ("u1", "u2"):  # online before the watcher asks
            await connect(node).signin(user)
        watcher = connect(node)
        watcher.take()
        signin = asyncio.ensure_future(watcher.signin("w", watchlist=["u1", "u2", "u3"]))
        await presence.asked.wait()
        # While the snapshot (u1, u2 online) is on its way, other nodes report:
        node._control(APP.id, UserOnline("u1"))  # already in the snapshot
        node._control(APP.id, UserOffline("u2"))  # newer than the snapshot
        node._control(APP.id, UserOnline("u3"))  # newer than the snapshot
        presence.release.set()
        await signin
        messages = [m for m in watcher.take() if m["event"] != "pusher:signin_success"]
        assert messages == [
            watchlist_event("online", ["u1"]),
            watchlist_event("online", ["u3"]),
        ]
        node._control(APP.id, UserOffline("u3"))
        node._control(APP.id, UserOffline("u2"))  # it was never told online
        assert watcher.take() == [watchlist_event("offline", ["u3"])]
    finally:
        await node.close()


class SlowSubscriptions(MemorySubscriptions):
    """subscribe answers only when released, as a Redis round trip (or a cluster's
    SSUBSCRIBE) might."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        self.asked.set()
        await self.release.wait()
        return await super().subscribe(app_id, channel, socket_id)


async def test_signin_success_only_once_the_user_channel_is_joined(clock: FakeClock) -> None:
    # A client that sends to the user as soon as it hears of its sign-in must reach it:
    # signin_success may not overtake the user channel's subscribe.
    broker = MemoryBroker()
    broker.subscriptions = subscriptions = SlowSubscriptions()
    node = Node(AppRegistry.of([APP]), broker, clock=clock)
    await node.start()
    try:
        user = connect(node)
        user.take()
        signin = asyncio.ensure_future(user.signin("u1"))
        await subscriptions.asked.wait()
        assert user.take() == []
        subscriptions.release.set()
        await signin
        assert [m["event"] for m in user.take()] == ["pusher:signin_success"]
        assert await broker.subscriptions.count(APP.id, "#server-to-user-u1") == 1
    finally:
        await node.close()


async def test_watchlist_with_nobody_online_sends_nothing_at_signin(node: Node) -> None:
    watcher = connect(node)
    watcher.take()
    await watcher.signin("w", watchlist=["u9"])
    assert [m["event"] for m in watcher.take()] == ["pusher:signin_success"]


async def test_terminate_closes_only_that_users_sockets(node: Node) -> None:
    u1a, u1b, u2, anonymous = connect(node), connect(node), connect(node), connect(node)
    await u1a.signin("u1")
    await u1b.signin("u1")
    await u2.signin("u2")
    for c in (u1a, u1b, u2, anonymous):
        c.take()
    await node.terminate_user(APP, "u1")
    for c in (u1a, u1b):
        assert c.take() == [
            {
                "event": "pusher:error",
                "data": {"code": 4009, "message": "Connection terminated by the app"},
            }
        ]
        assert c.closed == (4009, "Connection terminated by the app")
        assert c.session.closed
    assert u2.closed is None and anonymous.closed is None
    assert u2.take() == [] and anonymous.take() == []
    await node.terminate_user(APP, "nobody")


# -- authorized connections and timers -----------------------------------------------------


async def test_timers_close_an_unauthorized_connection(clock: FakeClock) -> None:
    app = App("1", "k", "s", authorized_connections=True, authorized_connections_timeout=5)
    settings = NodeSettings(activity_timeout=0.4, pong_timeout=0.4)
    node = Node(AppRegistry.of([app]), MemoryBroker(), settings, clock=clock)
    await node.start()
    try:
        idle = connect(node, app)
        idle.take()
        clock.now += 5
        await eventually(lambda: idle.closed is not None)  # the ticker runs every 0.1 s here
        assert idle.take()[0] == {
            "event": "pusher:error",
            "data": {"code": 4009, "message": "Connection not authorized within timeout"},
        }
        assert idle.closed == (4009, "Connection not authorized within timeout")
    finally:
        await node.close()


async def test_timers_ping_idle_connection_then_close_4201(clock: FakeClock) -> None:
    settings = NodeSettings(activity_timeout=0.4, pong_timeout=0.4)
    node = Node(AppRegistry.of([APP]), MemoryBroker(), settings, clock=clock)
    await node.start()
    try:
        connection = connect(node)
        connection.take()
        clock.now += 1
        await eventually(lambda: bool(connection.sent))
        await asyncio.sleep(0.25)  # later ticks at the same time send no second ping
        assert connection.take() == [{"event": "pusher:ping", "data": "{}"}]
        assert connection.closed is None
        clock.now += 1
        await eventually(lambda: connection.closed is not None)
        assert connection.closed is not None and connection.closed[0] == 4201
    finally:
        await node.close()


# -- detach -------------------------------------------------------------------------------


async def test_detach_cleans_everything(node: Node) -> None:
    connection = connect(node)
    await connection.signin("u1", watchlist=["u2"])
    await connection.subscribe("news")
    await connection.subscribe("private-a")
    await connection.subscribe("private-encrypted-b")
    await connection.join_presence("presence-room", "u1")
    await connection.subscribe("#server-to-user-u1")
    counting = connect(node, COUNTING)
    await counting.subscribe("counted")
    assert await node.channels(APP) == {
        "news": 1,
        "private-a": 1,
        "private-encrypted-b": 1,
        "presence-room": 1,
    }

    await node.detach(connection)
    await node.detach(counting)
    await node.detach(connection)  # twice is harmless
    await asyncio.sleep(FLUSH)

    assert await node.channels(APP) == {}
    assert await node.channels(COUNTING) == {}
    assert await node.broker.subscriptions.channels(APP.id) == {}  # the user channel too
    assert await node.members(APP, "presence-room") == []
    assert await node.broker.presence.users_online(APP.id, ["u1"]) == []
    assert node.connection_count == 0
    assert node.connections() == []
    assert connection.session.subscriptions == {}
    # Nothing is delivered to a detached connection.
    connection.take()
    await node.trigger(APP, Trigger("e", "d", ("news", "#server-to-user-u1"), None, ()))
    assert connection.take() == []


async def test_frames_after_detach_do_nothing(node: Node) -> None:
    connection = connect(node)
    await node.detach(connection)
    connection.take()
    await connection.subscribe("news")
    assert connection.take() == []
    assert await node.channels(APP) == {}


# -- isolation: one failing socket or step never stops the others --------------------------
# (issue #11: a write to a closed transport climbed out of a member_removed fan-out and
# aborted the detach; the crowd it belonged to stayed behind as ghost members.)

HOOKED = App(
    "56789",
    "hooked-key",
    "hooked-secret",
    subscription_count=True,
    webhooks=(WebhookTarget("http://127.0.0.1:9/hooks"),),
)
ROOM = "presence-room"


class HeldWebhooks:
    """``node.webhooks`` stand-in: what was emitted, and what is held back by key."""

    def __init__(self) -> None:
        self.emitted: list[dict[str, Any]] = []
        self.held: dict[tuple[str, ...], dict[str, Any]] = {}

    def active(self, app: App) -> bool:
        return bool(app.webhooks)

    def wants(self, app: App, name: str) -> bool:
        return True

    def emit(self, app: App, event: dict[str, Any]) -> None:
        self.emitted.append(event)

    def defer(self, app: App, key: tuple[str, ...], event: dict[str, Any]) -> None:
        self.held[key] = event

    def occur(self, app: App, undoes: tuple[str, ...], event: dict[str, Any]) -> None:
        if self.held.pop(undoes, None) is None:
            self.emitted.append(event)


class FlakySubscriptions(MemorySubscriptions):
    """The memory broker's, but unsubscribe and count raise for some channels."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        if channel in self.failing:
            raise RuntimeError(f"unsubscribe {channel} failed")
        return await super().unsubscribe(app_id, channel, socket_id)

    async def count(self, app_id: str, channel: str) -> int:
        if channel in self.failing:
            raise RuntimeError(f"subscription count of {channel} failed")
        return await super().count(app_id, channel)


class VanishedConnection(FakeConnection):
    """A socket whose peer is gone before the node knows: once ``gone``, every write
    raises as uvloop's closed transports do."""

    gone = False

    def send(self, message: bytes) -> None:
        if self.gone:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        super().send(message)

    def close(self, code: int, reason: str) -> None:
        if self.gone:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        super().close(code, reason)


@pytest.fixture
async def hooked(
    clock: FakeClock,
) -> AsyncIterator[tuple[Node, FlakySubscriptions, HeldWebhooks]]:
    broker = MemoryBroker()
    broker.subscriptions = subscriptions = FlakySubscriptions()
    node = Node(AppRegistry.of([HOOKED]), broker, clock=clock)
    webhooks = HeldWebhooks()
    node.webhooks = webhooks
    await node.start()
    yield node, subscriptions, webhooks
    await node.close()


def vanishing(node: Node) -> VanishedConnection:
    connection = VanishedConnection(node, HOOKED)
    node.attach(connection)
    return connection


def member_removed(user_id: str) -> dict[str, Any]:
    data = json.dumps({"user_id": user_id}, separators=(",", ":"))
    return {"event": "pusher_internal:member_removed", "channel": ROOM, "data": data}


async def test_a_raising_recipient_never_stops_a_control_fanout(
    hooked: tuple[Node, FlakySubscriptions, HeldWebhooks], caplog: pytest.LogCaptureFixture
) -> None:
    """member_removed and watchlist "offline" reach every other socket, the leaver's detach
    completes, and its member_removed webhook is held."""
    node, _, webhooks = hooked
    first, middle, last = connect(node, HOOKED), vanishing(node), connect(node, HOOKED)
    leaver = connect(node, HOOKED)
    for name, c in (("first", first), ("middle", middle), ("last", last)):
        await c.signin(name, watchlist=["leaver"])
        await c.join_presence(ROOM, name)
    await leaver.signin("leaver")
    await leaver.join_presence(ROOM, "leaver")
    for c in (first, middle, last, leaver):
        c.take()
    middle.gone = True  # its transport closed a moment ago; the node does not know yet

    await node.detach(leaver)

    for c in (first, last):
        assert c.take() == [member_removed("leaver"), watchlist_event("offline", ["leaver"])]
    assert [m.user_id for m in await node.members(HOOKED, ROOM)] == ["first", "middle", "last"]
    assert await node.broker.presence.users_online(HOOKED.id, ["leaver"]) == []
    assert ("removed", ROOM, "leaver") in webhooks.held
    assert caplog.text.count(f"member_removed to {middle.socket_id} failed") == 1
    assert caplog.text.count(f"watchlist offline to {middle.socket_id} failed") == 1

    await node.detach(middle)  # and the broken one is forgotten like any other
    assert first.take() == [member_removed("middle")]
    assert [m.user_id for m in await node.members(HOOKED, ROOM)] == ["first", "last"]


async def test_terminate_and_drain_go_on_past_a_raising_connection(
    hooked: tuple[Node, FlakySubscriptions, HeldWebhooks],
) -> None:
    node, _, _ = hooked
    broken, healthy = vanishing(node), connect(node, HOOKED)
    await broken.signin("u1")
    await healthy.signin("u1")
    broken.gone = True
    await node.terminate_user(HOOKED, "u1")
    assert healthy.closed == (4009, "Connection terminated by the app")

    other = connect(node, HOOKED)
    await node.drain()
    assert other.closed == (4200, "Server shutting down")


async def test_detach_goes_on_when_one_channel_fails(
    hooked: tuple[Node, FlakySubscriptions, HeldWebhooks],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leaving "broken" raises: the other channels are still left, the user signed out,
    and the held webhooks (member_removed, channel_vacated) still run."""
    node, _, webhooks = hooked
    connection, observer = connect(node, HOOKED), connect(node, HOOKED)
    await observer.signin("observer", watchlist=["u1"])
    await observer.join_presence(ROOM, "observer")
    await connection.signin("u1")
    for channel in ("broken", ROOM, "news"):
        if channel == ROOM:
            await connection.join_presence(ROOM, "u1")
        else:
            await connection.subscribe(channel)
    observer.take()
    leave = node._leave

    async def failing_leave(c: Any, channel: str, ctype: Any, member: Member | None) -> None:
        if channel == "broken":
            raise RuntimeError("leaving broken failed")
        await leave(c, channel, ctype, member)

    monkeypatch.setattr(node, "_leave", failing_leave)

    await node.detach(connection)

    assert await node.channels(HOOKED) == {"broken": 1, ROOM: 1}  # only the failed step stays
    assert [m.user_id for m in await node.members(HOOKED, ROOM)] == ["observer"]
    assert await node.broker.presence.users_online(HOOKED.id, ["u1"]) == []
    assert observer.take() == [member_removed("u1"), watchlist_event("offline", ["u1"])]
    assert ("removed", ROOM, "u1") in webhooks.held
    assert ("vacated", "news") in webhooks.held
    assert f"leaving broken for closed connection {connection.socket_id} failed" in caplog.text
    assert node.connection_count == 1 and connection.session.subscriptions == {}


async def test_a_failing_broker_step_never_keeps_a_ghost_member(
    hooked: tuple[Node, FlakySubscriptions, HeldWebhooks],
) -> None:
    """The presence channel's unsubscribe and the user channel's fail: the member still
    leaves (and is announced), the user is still signed out."""
    node, subscriptions, webhooks = hooked
    connection, observer = connect(node, HOOKED), connect(node, HOOKED)
    await observer.join_presence(ROOM, "observer")
    await connection.signin("u1")
    await connection.join_presence(ROOM, "u1")
    observer.take()
    subscriptions.failing |= {ROOM, "#server-to-user-u1"}

    await node.detach(connection)

    assert [m.user_id for m in await node.members(HOOKED, ROOM)] == ["observer"]
    assert observer.take() == [member_removed("u1")]
    assert ("removed", ROOM, "u1") in webhooks.held
    assert await node.broker.presence.users_online(HOOKED.id, ["u1"]) == []


async def test_one_failing_subscription_count_never_stops_the_others(
    hooked: tuple[Node, FlakySubscriptions, HeldWebhooks],
) -> None:
    node, subscriptions, _ = hooked
    subscriptions.failing.add("a")
    connection = connect(node, HOOKED)
    await connection.subscribe("a")
    await connection.subscribe("b")
    await eventually(lambda: b"subscription_count" in b"".join(connection.sent))
    counts = [m for m in connection.take() if m["event"] == "pusher_internal:subscription_count"]
    assert counts == [
        {
            "event": "pusher_internal:subscription_count",
            "channel": "b",
            "data": '{"subscription_count":1}',
        }
    ]


async def test_trigger_all_keeps_the_batch_order_across_plain_and_cache_channels(
    node: Node,
) -> None:
    """Plain publications of a batch start together; a cache channel's waits for them, so
    a subscriber of both sees the batch in its order."""
    connection = connect(node)
    connection.take()
    await connection.subscribe("news")
    await connection.subscribe("cache-news")
    connection.take()
    batch = [
        Trigger("e1", "1", ("news",), None, ()),
        Trigger("e2", "2", ("cache-news",), None, ()),
        Trigger("e3", "3", ("news",), None, ()),
        Trigger("e4", "4", ("news",), None, ()),
    ]
    await node.trigger_all(APP, batch)
    assert [(m["event"], m["channel"]) for m in connection.take()] == [
        ("e1", "news"),
        ("e2", "cache-news"),
        ("e3", "news"),
        ("e4", "news"),
    ]


def test_call_soon_follows_the_running_loop() -> None:
    """The Coalescer's scheduler keeps the loop it found, and finds the next one when a
    node is used on another loop (each asyncio.run makes one)."""
    soon = _CallSoon()
    ran: list[asyncio.AbstractEventLoop] = []

    async def schedule_and_run() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        soon(lambda: (ran.append(asyncio.get_running_loop()), done.set_result(None)))
        await done
        return loop

    first = asyncio.run(schedule_and_run())
    second = asyncio.run(schedule_and_run())
    assert ran == [first, second]
    assert first is not second
