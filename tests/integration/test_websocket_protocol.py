"""The Pusher WebSocket protocol, spoken frame by frame against a real `tidings serve`.

A raw ``websockets`` client is used on purpose: it never answers a server ``pusher:ping``
by itself and lets each test send frames no well-behaved SDK would send.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUERY,
    SUBSCRIPTION_COUNT,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    channel_auth,
    hmac_hex,
    rest_request,
    unique,
)

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

# Settings that only some tests need go on an app of their own server (make_server).
BASE_APP: dict[str, Any] = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}


def app_with(**settings: Any) -> list[dict[str, Any]]:
    return [{**BASE_APP, **settings}]


async def assert_usable(sock: PusherSocket) -> None:
    """The connection still answers pings and can subscribe."""
    await sock.ping()
    await sock.subscribe(unique("still-usable"))


def trigger(http_url: str, channel: str, event: str, data: str) -> None:
    resp = rest_request(
        http_url,
        "POST",
        f"/apps/{APP_ID}/events",
        json_body={"name": event, "channel": channel, "data": data},
    )
    assert resp.status == 200, (resp.status, resp.body)


# --- connecting --------------------------------------------------------------------------


async def test_connection_established_shape(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url, handshake=False)
    frame = await asyncio.wait_for(sock.ws.recv(), TIMEOUT)
    message = json.loads(frame)
    assert message["event"] == "pusher:connection_established"
    # Pusher double-encodes: data is a JSON string, not an object.
    assert isinstance(message["data"], str)
    data = json.loads(message["data"])
    assert re.fullmatch(r"\d+\.\d+", data["socket_id"]), data
    assert data["activity_timeout"] == 120


async def test_socket_ids_are_unique(server: Any, open_socket: SocketOpener) -> None:
    socks = [await open_socket(server.ws_url) for _ in range(5)]
    assert len({s.socket_id for s in socks}) == 5


@pytest.mark.parametrize("protocol", [5, 6, 7])
async def test_supported_protocol_versions(
    server: Any, open_socket: SocketOpener, protocol: int
) -> None:
    sock = await open_socket(server.ws_url, query=f"protocol={protocol}&client=js&version=8.6.0")
    await sock.ping()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        pytest.param(f"/app/no-such-key?{QUERY}", 4001, id="unknown-key"),
        pytest.param(f"/app/disabled-key?{QUERY}", 4003, id="disabled-app"),
        pytest.param(f"/app/{APP_KEY}/extra?{QUERY}", 4005, id="extra-path-segment"),
        pytest.param(f"/app/?{QUERY}", 4005, id="empty-key"),
        pytest.param(f"/app/{APP_KEY}?protocol=abc&client=js", 4006, id="protocol-not-int"),
        pytest.param(f"/app/{APP_KEY}?protocol=4&client=js", 4007, id="protocol-too-old"),
        pytest.param(f"/app/{APP_KEY}?protocol=8&client=js", 4007, id="protocol-too-new"),
        pytest.param(f"/app/{APP_KEY}?client=js&version=8.6.0", 4008, id="protocol-missing"),
    ],
)
async def test_connection_refusals(
    server: Any, open_socket: SocketOpener, path: str, code: int
) -> None:
    sock = await open_socket(server.ws_url, path=path, handshake=False)
    error = await sock.recv(ignore=())
    assert error["event"] == "pusher:error", error
    assert isinstance(error["data"], dict), error
    assert error["data"]["code"] == code, error
    assert isinstance(error["data"]["message"], str) and error["data"]["message"], error
    closed = await sock.wait_closed()
    assert closed.code == code, closed
    assert closed.messages == [], closed


async def test_max_connections_per_app(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(apps=app_with(max_connections=2))
    first = await open_socket(srv.ws_url)
    second = await open_socket(srv.ws_url)
    third = await open_socket(srv.ws_url, handshake=False)
    error = await third.recv(ignore=())
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4004, error
    assert (await third.wait_closed()).code == 4004
    await second.ping()

    # A slot frees up when a connection goes away.
    await first.close()
    await second.ping()

    async def can_connect() -> bool:
        sock = await open_socket(srv.ws_url, handshake=False)
        message = await sock.recv(ignore=())
        return bool(message["event"] == "pusher:connection_established")

    deadline = time.monotonic() + TIMEOUT
    while not await can_connect():
        assert time.monotonic() < deadline, "no slot freed after a connection closed"
        await asyncio.sleep(0.1)


# --- ping / pong -------------------------------------------------------------------------


async def test_pusher_ping_gets_pong(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    await sock.send_raw('{"event":"pusher:ping","data":{}}')
    assert await sock.recv() == {"event": "pusher:pong", "data": "{}"}
    # pusher-js may also send the data as a string.
    await sock.send_raw('{"event":"pusher:ping","data":"{}"}')
    assert await sock.recv() == {"event": "pusher:pong", "data": "{}"}


async def test_websocket_level_ping_is_answered(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    pong_waiter = await sock.ws.ping(b"hello")
    await asyncio.wait_for(pong_waiter, TIMEOUT)


# --- malformed input ---------------------------------------------------------------------

MALFORMED: dict[str, str | bytes] = {
    "not-json": "this is not json",
    "truncated-json": '{"event": "pusher:ping"',
    "json-array": '[{"event": "pusher:ping", "data": {}}]',
    "json-string": '"pusher:ping"',
    "json-number": "42",
    "json-null": "null",
    "event-missing": '{"data": {}}',
    "event-not-string": '{"event": 42, "data": {}}',
    "event-object": '{"event": {"name": "pusher:ping"}, "data": {}}',
    "subscribe-data-number": '{"event": "pusher:subscribe", "data": 42}',
    "subscribe-data-array": '{"event": "pusher:subscribe", "data": ["x"]}',
    "subscribe-data-bool": '{"event": "pusher:subscribe", "data": true}',
    "subscribe-without-channel": '{"event": "pusher:subscribe", "data": {}}',
    "subscribe-without-data": '{"event": "pusher:subscribe"}',
    "unsubscribe-without-channel": '{"event": "pusher:unsubscribe", "data": {}}',
    "unknown-pusher-event": '{"event": "pusher:no_such_event", "data": {}}',
    "binary-frame": b'{"event": "pusher:ping", "data": {}}',
}


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_frame_gets_error_and_connection_survives(
    server: Any, open_socket: SocketOpener, frame: str | bytes
) -> None:
    sock = await open_socket(server.ws_url)
    await sock.send_raw(frame)
    error = await sock.recv()
    assert error["event"] == "pusher:error", error
    assert isinstance(error["data"], dict), error
    assert error["data"]["code"] is None, error
    assert isinstance(error["data"]["message"], str) and error["data"]["message"], error
    await assert_usable(sock)


async def test_subscribe_data_as_json_string_is_accepted(
    server: Any, open_socket: SocketOpener
) -> None:
    sock = await open_socket(server.ws_url)
    channel = unique("string-data")
    await sock.send_event("pusher:subscribe", json.dumps({"channel": channel}))
    message = await sock.expect("pusher_internal:subscription_succeeded", channel)
    assert message["data"] == "{}", message


async def test_message_at_size_limit_is_accepted(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    skeleton = json.dumps({"event": "pusher:ping", "data": {"pad": ""}})
    frame = json.dumps({"event": "pusher:ping", "data": {"pad": "x" * (32768 - len(skeleton))}})
    assert len(frame) == 32768
    await sock.send_raw(frame)
    await sock.expect("pusher:pong")


async def test_oversized_message_closes_1009(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    await sock.send_event("pusher:ping", {"pad": "x" * 32768})
    closed = await sock.wait_closed()
    assert closed.code == 1009, closed


async def test_bad_messages_on_one_connection_never_affect_another(
    server: Any, open_socket: SocketOpener
) -> None:
    channel = unique("isolation")
    good = await open_socket(server.ws_url)
    bad = await open_socket(server.ws_url)
    await good.subscribe(channel)
    await bad.subscribe(channel)
    for frame in MALFORMED.values():
        await bad.send_raw(frame)
    await bad.send_event("client-x", {"a": 1}, channel)  # public channel: refused
    await bad.send_event("pusher:ping", {"pad": "x" * 40000})  # over the limit: closes
    assert (await bad.wait_closed()).code == 1009

    trigger(server.http_url, channel, "after-the-storm", "still here")
    message = await good.expect("after-the-storm", channel)
    assert message["data"] == "still here"
    await good.assert_silent()


# --- subscriptions -----------------------------------------------------------------------

BAD_NAMES = {
    "space": "bad channel",
    "bang": "bad!channel",
    "slash": "bad/channel",
    "unicode": "caf\u00e9",
    "hash-reserved": "#reserved-channel",
    "too-long": "a" * 201,
    "private-too-long": "private-" + "a" * 193,
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
async def test_invalid_channel_name_gets_subscription_error_400(
    server: Any, open_socket: SocketOpener, name: str
) -> None:
    sock = await open_socket(server.ws_url)
    auth = channel_auth(sock.socket_id, name) if name.startswith("private-") else None
    await sock.send_subscribe(name, auth)
    data = await sock.subscription_error(name)
    assert data["type"] == "InvalidChannel", data
    assert data["status"] == 400, data
    assert isinstance(data["error"], str) and data["error"], data
    await assert_usable(sock)


async def test_longest_valid_channel_name(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    prefix = unique("-_=@,.")
    await sock.subscribe(prefix + "a" * (200 - len(prefix)))


def _private_auth_cases(socket_id: str, channel: str) -> dict[str, dict[str, Any]]:
    good_sig = hmac_hex(APP_SECRET, f"{socket_id}:{channel}")
    return {
        "no-auth": {"channel": channel},
        "empty-auth": {"channel": channel, "auth": ""},
        "no-colon": {"channel": channel, "auth": good_sig},
        "wrong-secret": {
            "channel": channel,
            "auth": f"{APP_KEY}:{hmac_hex('wrong', f'{socket_id}:{channel}')}",
        },
        "wrong-key": {"channel": channel, "auth": f"disabled-key:{good_sig}"},
        "other-socket-id": {"channel": channel, "auth": channel_auth("1.1", channel)},
        "other-channel": {"channel": channel, "auth": channel_auth(socket_id, channel + "x")},
    }


PRIVATE_CASES = list(_private_auth_cases("1.1", "c"))


@pytest.mark.parametrize("case", PRIVATE_CASES)
@pytest.mark.parametrize("prefix", ["private-", "private-encrypted-", "private-cache-"])
async def test_private_channel_bad_auth_gets_401(
    server: Any, open_socket: SocketOpener, case: str, prefix: str
) -> None:
    sock = await open_socket(server.ws_url)
    channel = unique(prefix + "auth")
    await sock.send_event("pusher:subscribe", _private_auth_cases(sock.socket_id, channel)[case])
    data = await sock.subscription_error(channel)
    assert data["type"] == "AuthError", data
    assert data["status"] == 401, data
    # A failed attempt leaves nothing behind: the right signature now works.
    await sock.subscribe_private(channel)
    if "cache" in prefix:
        await sock.expect("pusher:cache_miss", channel)
    await assert_usable(sock)


def _presence_auth_cases(socket_id: str, channel: str) -> dict[str, dict[str, Any]]:
    member = '{"user_id":"u1"}'

    def signed(channel_data: str) -> dict[str, Any]:
        auth = channel_auth(socket_id, channel, channel_data)
        return {"channel": channel, "auth": auth, "channel_data": channel_data}

    return {
        "no-channel-data": {"channel": channel, "auth": channel_auth(socket_id, channel)},
        "channel-data-not-json": signed("not json"),
        "channel-data-not-object": signed('["u1"]'),
        "channel-data-without-user-id": signed('{"user_info":{"name":"x"}}'),
        "channel-data-empty-user-id": signed('{"user_id":""}'),
        "signed-other-channel-data": {
            "channel": channel,
            "auth": channel_auth(socket_id, channel, member),
            "channel_data": '{"user_id":"u2"}',
        },
        "signature-without-channel-data": {
            "channel": channel,
            "auth": channel_auth(socket_id, channel),
            "channel_data": member,
        },
    }


@pytest.mark.parametrize("case", list(_presence_auth_cases("1.1", "c")))
async def test_presence_channel_bad_auth_gets_401(
    server: Any, open_socket: SocketOpener, case: str
) -> None:
    sock = await open_socket(server.ws_url)
    channel = unique("presence-auth")
    await sock.send_event("pusher:subscribe", _presence_auth_cases(sock.socket_id, channel)[case])
    data = await sock.subscription_error(channel)
    assert data["type"] == "AuthError", data
    assert data["status"] == 401, data
    presence = await sock.subscribe_presence(channel, "u1")
    assert presence["ids"] == ["u1"], presence
    await assert_usable(sock)


async def test_presence_roster_and_member_events(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("presence-roster")
    alice = await open_socket(server.ws_url)
    bob = await open_socket(server.ws_url)
    bob_again = await open_socket(server.ws_url)

    roster = await alice.subscribe_presence(channel, "alice", {"name": "Alice"})
    assert roster == {"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1}

    roster = await bob.subscribe_presence(channel, "bob", {"name": "Bob"})
    assert sorted(roster["ids"]) == ["alice", "bob"] and roster["count"] == 2, roster
    assert roster["hash"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}, roster
    added = await alice.expect("pusher_internal:member_added", channel)
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}
    await bob.assert_silent()  # never told about itself

    # A second socket of the same user is not a new member.
    roster = await bob_again.subscribe_presence(channel, "bob", {"name": "Bob"})
    assert roster["count"] == 2, roster
    # Subscribing twice gets Pusher's pusher:error (no second roster), and no member_added.
    member = json.dumps({"user_id": "alice", "user_info": {"name": "Alice"}})
    await alice.send_subscribe(channel, channel_auth(alice.socket_id, channel, member), member)
    error = await alice.expect("pusher:error")
    assert error["data"] == {
        "code": None,
        "message": f"Existing subscription to channel {channel}",
    }, error
    await alice.assert_silent()
    await bob.assert_silent()

    # member_removed only when the user's last socket leaves.
    await bob.send_event("pusher:unsubscribe", {"channel": channel})
    await alice.assert_silent()
    await bob_again.close()
    removed = await alice.expect("pusher_internal:member_removed", channel)
    assert json.loads(removed["data"]) == {"user_id": "bob"}


async def test_numeric_user_id_becomes_string(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("presence-numeric")
    first = await open_socket(server.ws_url)
    second = await open_socket(server.ws_url)
    await first.subscribe_presence(channel, "a")
    channel_data = '{"user_id":42,"user_info":{}}'
    message = await second.subscribe(
        channel, channel_auth(second.socket_id, channel, channel_data), channel_data
    )
    roster = json.loads(message["data"])["presence"]
    assert sorted(roster["ids"]) == ["42", "a"], roster
    added = await first.expect("pusher_internal:member_added", channel)
    assert json.loads(added["data"])["user_id"] == "42", added


async def test_unsubscribe_stops_delivery(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("unsubscribe")
    sock = await open_socket(server.ws_url)
    await sock.subscribe(channel)
    await sock.send_event("pusher:unsubscribe", {"channel": channel})
    await sock.assert_silent()  # no acknowledgement
    trigger(server.http_url, channel, "after-unsubscribe", "x")
    await sock.assert_silent()


async def test_subscription_count_events(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("counted")
    first = await open_socket(server.ws_url)
    second = await open_socket(server.ws_url)

    async def join(sock: PusherSocket) -> dict[str, Any]:
        """Subscribe; the succeeded message and the count update may come in either order."""
        await sock.send_subscribe(channel)
        messages = {m["event"]: m for m in await sock.recv_n(2, ignore=())}
        assert set(messages) == {"pusher_internal:subscription_succeeded", SUBSCRIPTION_COUNT}
        assert messages[SUBSCRIPTION_COUNT]["channel"] == channel
        count: dict[str, Any] = json.loads(messages[SUBSCRIPTION_COUNT]["data"])
        return count

    assert await join(first) == {"subscription_count": 1}
    assert await join(second) == {"subscription_count": 2}
    update = await first.expect(SUBSCRIPTION_COUNT, channel, ignore=())
    assert json.loads(update["data"]) == {"subscription_count": 2}
    await second.close()
    update = await first.expect(SUBSCRIPTION_COUNT, channel, ignore=())
    assert json.loads(update["data"]) == {"subscription_count": 1}


async def test_presence_member_limit(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(apps=app_with(max_presence_members=2))
    channel = unique("presence-limited")
    u1 = await open_socket(srv.ws_url)
    u2 = await open_socket(srv.ws_url)
    u3 = await open_socket(srv.ws_url)
    u1_again = await open_socket(srv.ws_url)
    await u1.subscribe_presence(channel, "u1")
    await u2.subscribe_presence(channel, "u2")
    await u1.expect("pusher_internal:member_added", channel)

    channel_data = '{"user_id":"u3"}'
    await u3.send_subscribe(
        channel, channel_auth(u3.socket_id, channel, channel_data), channel_data
    )
    data = await u3.subscription_error(channel)
    assert data["type"] == "LimitReached", data
    assert data["status"] == 4100, data
    await assert_usable(u3)

    # The members are untouched: no member_added for u3, and events still reach them.
    await u1.assert_silent()
    await u2.assert_silent()
    trigger(srv.http_url, channel, "hello-members", "hi")
    for sock in (u1, u2):
        assert (await sock.expect("hello-members", channel))["data"] == "hi"
    await u3.assert_silent()

    # Members are users: another socket of a present user still fits.
    roster = await u1_again.subscribe_presence(channel, "u1")
    assert sorted(roster["ids"]) == ["u1", "u2"], roster


async def test_presence_member_info_too_big(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("presence-big")
    sock = await open_socket(server.ws_url)
    channel_data = json.dumps({"user_id": "big", "user_info": {"bio": "x" * 1100}})
    await sock.send_subscribe(
        channel, channel_auth(sock.socket_id, channel, channel_data), channel_data
    )
    data = await sock.subscription_error(channel)
    assert data["type"] == "LimitReached", data
    assert data["status"] == 4100, data
    await assert_usable(sock)


async def test_max_channels_per_connection(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    tag = unique("many")
    for i in range(101):
        await sock.send_subscribe(f"{tag}-{i}")
    replies = await sock.recv_n(101)
    events = [(m["event"], m["channel"]) for m in replies]
    succeeded = "pusher_internal:subscription_succeeded"
    assert events[:100] == [(succeeded, f"{tag}-{i}") for i in range(100)], events
    assert events[100] == ("pusher:subscription_error", f"{tag}-100"), events
    assert replies[100]["data"]["type"] == "LimitReached", replies[100]
    assert replies[100]["data"]["status"] == 4100, replies[100]
    # Leaving one channel makes room for another.
    await sock.send_event("pusher:unsubscribe", {"channel": f"{tag}-0"})
    await sock.subscribe(f"{tag}-100")
    await sock.ping()


async def test_server_to_user_channel_only_for_that_user(
    server: Any, open_socket: SocketOpener
) -> None:
    user = unique("u")
    signed_in = await open_socket(server.ws_url)
    stranger = await open_socket(server.ws_url)
    await signed_in.signin({"id": user})
    await signed_in.subscribe(f"#server-to-user-{user}", "")
    await stranger.send_subscribe(f"#server-to-user-{user}", "")
    await stranger.subscription_error(f"#server-to-user-{user}")
    await assert_usable(stranger)


# --- client events -----------------------------------------------------------------------


async def test_client_event_on_private_channel(server: Any, open_socket: SocketOpener) -> None:
    channel = unique("private-chat")
    sender = await open_socket(server.ws_url)
    receiver = await open_socket(server.ws_url)
    await sender.subscribe_private(channel)
    await receiver.subscribe_private(channel)

    await sender.send_event("client-typing", {"n": 1}, channel)
    message = await receiver.expect("client-typing", channel)
    assert set(message) == {"event", "channel", "data"}, message
    assert isinstance(message["data"], str), message
    assert json.loads(message["data"]) == {"n": 1}

    await sender.send_event("client-text", "plain string", channel)
    message = await receiver.expect("client-text", channel)
    assert message["data"] == "plain string"
    await sender.assert_silent()  # never echoed


async def test_client_event_on_presence_channel_carries_user_id(
    server: Any, open_socket: SocketOpener
) -> None:
    channel = unique("presence-chat")
    sender = await open_socket(server.ws_url)
    receiver = await open_socket(server.ws_url)
    await sender.subscribe_presence(channel, "sender-id")
    await receiver.subscribe_presence(channel, "receiver-id")
    await sender.expect("pusher_internal:member_added", channel)

    await sender.send_event("client-hi", {"x": [1, 2]}, channel)
    message = await receiver.expect("client-hi", channel)
    assert message["user_id"] == "sender-id", message
    assert json.loads(message["data"]) == {"x": [1, 2]}
    await sender.assert_silent()


async def test_client_events_refused(server: Any, open_socket: SocketOpener) -> None:
    public = unique("public-chat")
    private = unique("private-chat")
    not_joined = unique("private-elsewhere")
    sender = await open_socket(server.ws_url)
    receiver = await open_socket(server.ws_url)
    for sock in (sender, receiver):
        await sock.subscribe(public)
        await sock.subscribe_private(private)
    await receiver.subscribe_private(not_joined)

    attempts = [
        ("public channel", public, "x"),
        ("not subscribed", not_joined, "x"),
        ("payload too big", private, "x" * 10241),
    ]
    for why, channel, data in attempts:
        await sender.send_event("client-nope", data, channel)
        error = await sender.recv()
        assert error["event"] == "pusher:error", (why, error)
        assert error["data"]["code"] is None, (why, error)
        assert isinstance(error["data"]["message"], str) and error["data"]["message"], why
    await receiver.assert_silent()

    # Still usable, and a payload under max_event_payload_bytes goes through.
    await sender.send_event("client-ok", "y" * 10000, private)
    assert (await receiver.expect("client-ok", private))["data"] == "y" * 10000


@pytest.mark.parametrize("prefix", ["private-encrypted-", "private-encrypted-cache-"])
async def test_client_event_on_encrypted_channel_is_refused(
    server: Any, open_socket: SocketOpener, prefix: str
) -> None:
    """Pusher's client libraries refuse client events on encrypted channels; the server
    refuses a client that sends one anyway, instead of relaying plaintext to the peers."""
    channel = unique(prefix + "chat")
    sender = await open_socket(server.ws_url)
    receiver = await open_socket(server.ws_url)
    for sock in (sender, receiver):
        await sock.subscribe_private(channel)
        if "cache" in prefix:
            await sock.expect("pusher:cache_miss", channel)

    for data in ({"secret": "plaintext"}, {"nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy"}):
        await sender.send_event("client-typing", data, channel)
        error = await sender.expect("pusher:error")
        assert error["data"] == {
            "code": None,
            "message": "Client events are not supported on encrypted channels",
        }, error
    await receiver.assert_silent()
    await assert_usable(sender)
    # Events from the server still reach both.
    trigger(server.http_url, channel, "server-event", "ciphertext")
    for sock in (sender, receiver):
        assert (await sock.expect("server-event", channel))["data"] == "ciphertext"


async def test_client_events_disabled(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(apps=app_with(client_events=False))
    channel = unique("private-quiet")
    sender = await open_socket(srv.ws_url)
    receiver = await open_socket(srv.ws_url)
    await sender.subscribe_private(channel)
    await receiver.subscribe_private(channel)
    await sender.send_event("client-hello", {}, channel)
    error = await sender.recv()
    assert error["event"] == "pusher:error", error
    assert error["data"]["code"] is None, error
    await receiver.assert_silent()
    await assert_usable(sender)


async def test_client_event_rate_limit(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(apps=app_with(max_client_events_per_second=2))
    channel = unique("private-busy")
    sender = await open_socket(srv.ws_url)
    receiver = await open_socket(srv.ws_url)
    await sender.subscribe_private(channel)
    await receiver.subscribe_private(channel)

    sent = 6
    for i in range(sent):
        await sender.send_event("client-burst", {"i": i}, channel)
    # Each dropped event gets its own 4301; read them all, and a pong to know we are done.
    await sender.send_event("pusher:ping", {})
    errors = 0
    while (message := await sender.recv())["event"] != "pusher:pong":
        assert message["event"] == "pusher:error", message
        assert message["data"]["code"] == 4301, message
        errors += 1
    delivered = [json.loads(m["data"])["i"] for m in await receiver.recv_n(sent - errors)]
    await receiver.assert_silent()
    # Events under the limit are never dropped; a burst of 6 within milliseconds is at most
    # two windows' worth even if the window is aligned to the wall clock.
    assert 2 <= len(delivered) <= 4, delivered
    assert delivered == list(range(len(delivered))), delivered
    assert errors == sent - len(delivered)

    # The connection stays open and the budget comes back.
    await asyncio.sleep(1.1)
    await sender.send_event("client-later", {}, channel)
    await receiver.expect("client-later", channel)
    await sender.assert_silent()


# --- signin and authorized connections ---------------------------------------------------


async def test_signin_bad_signature_closes_4009(server: Any, open_socket: SocketOpener) -> None:
    sock = await open_socket(server.ws_url)
    user_data = '{"id":"mallory"}'
    forged = f"{APP_KEY}:{hmac_hex('not-the-secret', f'{sock.socket_id}::user::{user_data}')}"
    await sock.send_event("pusher:signin", {"auth": forged, "user_data": user_data})
    error = await sock.recv()
    assert error["event"] == "pusher:error", error
    assert error["data"]["code"] == 4009, error
    assert (await sock.wait_closed()).code == 4009


async def test_authorized_connections_timeout(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(apps=app_with(authorized_connections=True, authorized_connections_timeout=1))
    idle = await open_socket(srv.ws_url)
    public_only = await open_socket(srv.ws_url)
    private = await open_socket(srv.ws_url)
    signed_in = await open_socket(srv.ws_url)
    start = time.monotonic()
    await public_only.subscribe(unique("public"))
    await private.subscribe_private(unique("private-ok"))
    await signed_in.signin({"id": "someone"})

    for sock in (idle, public_only):
        closed = await sock.wait_closed(timeout=2 * TIMEOUT)
        assert closed.code == 4009, closed
        errors = [m for m in closed.messages if m.get("event") == "pusher:error"]
        assert [e["data"]["code"] for e in errors] == [4009], closed.messages
    assert time.monotonic() - start >= 0.5

    # Well past the timeout, the authorized ones are still open.
    await asyncio.sleep(max(0.0, start + 2.0 - time.monotonic()))
    await private.ping()
    await signed_in.ping()


# --- activity timeout and shutdown -------------------------------------------------------


async def test_idle_connection_is_pinged_then_closed_4201(
    make_server: Any, open_socket: SocketOpener
) -> None:
    srv = make_server(activity_timeout=1, pong_timeout=1)
    silent = await open_socket(srv.ws_url)
    lively = await open_socket(srv.ws_url)
    assert silent.activity_timeout == 1
    start = time.monotonic()

    async def answer_pings(sock: PusherSocket, stop: asyncio.Event) -> int:
        pings = 0
        while not stop.is_set():
            try:
                message = await sock.recv(timeout=0.1)
            except TimeoutError:
                continue
            assert message["event"] == "pusher:ping", message
            pings += 1
            await sock.send_event("pusher:pong", {})
        return pings

    stop = asyncio.Event()
    answering = asyncio.create_task(answer_pings(lively, stop))
    try:
        ping = await silent.recv(timeout=3 * TIMEOUT)
        assert ping["event"] == "pusher:ping", ping
        assert time.monotonic() - start >= 0.5, "pinged before activity_timeout passed"
        closed = await silent.wait_closed(timeout=3 * TIMEOUT)
        assert closed.code == 4201, closed
        assert {m["event"] for m in closed.messages} <= {"pusher:error"}, closed.messages
        # Keep the lively socket answering for longer than activity + pong timeout.
        await asyncio.sleep(2.5)
    finally:
        stop.set()
        pings = await answering
    assert pings >= 1
    await lively.send_event("pusher:ping", {})
    await lively.expect("pusher:pong", ignore={"pusher:ping"})


async def test_sigterm_closes_every_socket_4200_and_exits_0(
    make_server: Any, open_socket: SocketOpener
) -> None:
    srv = make_server()
    subscribed = await open_socket(srv.ws_url)
    idle = await open_socket(srv.ws_url)
    await subscribed.subscribe(unique("draining"))

    stopping = asyncio.create_task(asyncio.to_thread(srv.stop, signal.SIGTERM))
    for sock in (subscribed, idle):
        closed = await sock.wait_closed(timeout=2 * TIMEOUT)
        assert closed.code == 4200, closed
    assert await asyncio.wait_for(stopping, 4 * TIMEOUT) == 0, srv.logs()
