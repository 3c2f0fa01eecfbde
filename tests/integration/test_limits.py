"""Every limit, against a real `tidings serve`: its documented error, and no effect on others.

Each test drives one client (or app) past one limit and proves a bystander on the same
server still gets what it is owed: its messages arrive, its requests succeed. The limits
and their errors are listed in docs/protocol.md ("Limits").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pusher_helpers import (
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    assert_error_response,
    channel_auth,
    rest_request,
    unique,
)

from server_process import ServerProcess, free_port, write_config

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

# One app with small limits; a second app for the backend rate limit (its budget is per
# app, so the bystander app publishes freely); a third with room for two connections.
LIMITED = {
    "id": "100",
    "key": "limited-key",
    "secret": "limited-secret",
    "max_message_bytes": 1024,
    "max_event_payload_bytes": 100,
    "max_channel_name_length": 40,
    "max_channels_per_connection": 3,
    "max_presence_members": 2,
    "max_presence_member_bytes": 64,
    "max_client_events_per_second": 3,
}
THROTTLED = {
    "id": "200",
    "key": "throttled-key",
    "secret": "throttled-secret",
    "max_backend_events_per_second": 3,
}
SMALL = {"id": "300", "key": "small-key", "secret": "small-secret", "max_connections": 2}


def start_server(tmp: Any, settings: dict[str, Any], apps: list[dict[str, Any]]) -> ServerProcess:
    config = write_config(tmp / "tidings.toml", settings, apps)
    server = ServerProcess(free_port(), config, tmp / "server.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("limits"),
        {"max_request_body": 2048},
        [LIMITED, THROTTLED, SMALL],
    )
    yield server
    server.stop()


def trigger(
    srv: ServerProcess, channel: str, event: str, data: str, app: dict[str, Any] = LIMITED
) -> int:
    resp = rest_request(
        srv.http_url,
        "POST",
        f"/apps/{app['id']}/events",
        json_body={"name": event, "channel": channel, "data": data},
        key=app["key"],
        secret=app["secret"],
    )
    return resp.status


async def bystander(
    open_socket: SocketOpener, srv: ServerProcess, app: dict[str, Any] = LIMITED
) -> tuple[PusherSocket, str]:
    """A well-behaved client of ``app`` subscribed to a channel of its own."""
    sock = await open_socket(srv.ws_url, app["key"])
    channel = unique("bystander")
    await sock.subscribe(channel)
    return sock, channel


async def assert_still_served(
    srv: ServerProcess, sock: PusherSocket, channel: str, app: dict[str, Any] = LIMITED
) -> None:
    """The bystander receives a fresh event and answers a ping."""
    event = unique("still-here")
    assert trigger(srv, channel, event, "ok", app) == 200
    message = await sock.expect(event, channel)
    assert message["data"] == "ok", message
    await sock.ping()


def sign(sock: PusherSocket, channel: str, channel_data: str | None = None) -> str:
    return channel_auth(
        sock.socket_id, channel, channel_data, key=LIMITED["key"], secret=LIMITED["secret"]
    )


# --- the socket --------------------------------------------------------------------------


async def test_message_over_max_message_bytes_closes_1009(
    srv: ServerProcess, open_socket: SocketOpener
) -> None:
    other, channel = await bystander(open_socket, srv)
    sock = await open_socket(srv.ws_url, LIMITED["key"])
    await sock.subscribe(channel)
    at_limit = json.dumps({"event": "pusher:ping", "data": {"pad": ""}})
    padded = json.dumps({"event": "pusher:ping", "data": {"pad": "x" * (1024 - len(at_limit))}})
    assert len(padded) == 1024
    await sock.send_raw(padded)
    await sock.expect("pusher:pong")
    await sock.send_raw(padded.replace('"x', '"xx', 1))  # 1025 bytes
    assert (await sock.wait_closed()).code == 1009
    await assert_still_served(srv, other, channel)


async def test_event_payload_over_max_event_payload_bytes(
    srv: ServerProcess, open_socket: SocketOpener
) -> None:
    other, public = await bystander(open_socket, srv)
    # REST: 413 with a JSON error body.
    assert trigger(srv, public, "fits", "x" * 100) == 200
    await other.expect("fits", public)
    resp = rest_request(
        srv.http_url,
        "POST",
        f"/apps/{LIMITED['id']}/events",
        json_body={"name": "big", "channel": public, "data": "x" * 101},
        key=LIMITED["key"],
        secret=LIMITED["secret"],
    )
    assert_error_response(resp, 413)
    # Client events: refused with pusher:error, connection kept, nothing delivered.
    private = unique("private-payload")
    sender = await open_socket(srv.ws_url, LIMITED["key"])
    receiver = await open_socket(srv.ws_url, LIMITED["key"])
    await sender.subscribe(private, sign(sender, private))
    await receiver.subscribe(private, sign(receiver, private))
    await sender.send_event("client-big", {"pad": "x" * 100}, private)
    error = await sender.expect("pusher:error")
    assert error["data"]["code"] is None and "larger" in error["data"]["message"], error
    await sender.send_event("client-small", {"n": 1}, private)
    assert json.loads((await receiver.expect("client-small", private))["data"]) == {"n": 1}
    await assert_still_served(srv, other, public)


@pytest.mark.parametrize(
    "name",
    ["a" * 41, "private-" + "a" * 33, "bad channel", "bad!channel", "caf\u00e9", "#reserved"],
    ids=["too-long", "private-too-long", "space", "bang", "non-ascii", "hash"],
)
async def test_channel_name_length_and_charset(
    srv: ServerProcess, open_socket: SocketOpener, name: str
) -> None:
    other, channel = await bystander(open_socket, srv)
    sock = await open_socket(srv.ws_url, LIMITED["key"])
    await sock.send_subscribe(name, sign(sock, name))
    data = await sock.subscription_error(name)
    assert (data["type"], data["status"]) == ("InvalidChannel", 400), data
    assert trigger(srv, name, "e", "d") == 400  # the REST API refuses the name too
    await sock.subscribe("a" * 40)  # the longest name allowed
    await assert_still_served(srv, other, channel)


async def test_channels_per_connection(srv: ServerProcess, open_socket: SocketOpener) -> None:
    other, channel = await bystander(open_socket, srv)
    await other.subscribe(unique("second"))
    await other.subscribe(unique("third"))
    sock = await open_socket(srv.ws_url, LIMITED["key"])
    for _ in range(3):
        await sock.subscribe(unique("mine"))
    fourth = unique("fourth")
    await sock.send_subscribe(fourth)
    data = await sock.subscription_error(fourth)
    assert (data["type"], data["status"]) == ("LimitReached", 4100), data
    await sock.ping()
    await assert_still_served(srv, other, channel)


async def test_presence_members_per_channel_and_member_size(
    srv: ServerProcess, open_socket: SocketOpener
) -> None:
    channel = unique("presence-room")
    first = await open_socket(srv.ws_url, LIMITED["key"])
    second = await open_socket(srv.ws_url, LIMITED["key"])
    third = await open_socket(srv.ws_url, LIMITED["key"])
    big = await open_socket(srv.ws_url, LIMITED["key"])
    for sock, user in ((first, "u1"), (second, "u2")):
        data = json.dumps({"user_id": user})
        await sock.subscribe(channel, sign(sock, channel, data), data)
    await first.expect("pusher_internal:member_added", channel)

    # Over max_presence_member_bytes (64): refused before it counts as a member.
    data = json.dumps({"user_id": "big", "user_info": {"bio": "x" * 64}})
    await big.send_subscribe(channel, sign(big, channel, data), data)
    refused = await big.subscription_error(channel)
    assert (refused["type"], refused["status"]) == ("LimitReached", 4100), refused
    # A third member of a full channel (max_presence_members = 2).
    data = json.dumps({"user_id": "u3"})
    await third.send_subscribe(channel, sign(third, channel, data), data)
    refused = await third.subscription_error(channel)
    assert (refused["type"], refused["status"]) == ("LimitReached", 4100), refused
    await third.ping()
    await big.ping()

    # The members saw nothing of it and still get the channel's events.
    await first.assert_silent()
    await second.assert_silent()
    assert trigger(srv, channel, "to-members", "hi") == 200
    for sock in (first, second):
        assert (await sock.expect("to-members", channel))["data"] == "hi"


# A presence channel as big as the amplification report's: 200 members of ~450 bytes each,
# so every roster is about 100 KB.
CROWD = 200
CROWDED = {**LIMITED, "id": "400", "key": "crowded-key", "max_presence_members": CROWD + 2}
CROWDED["max_presence_member_bytes"] = 1024
CROWD_INFO = {"bio": "b" * 400}


async def test_duplicate_subscribe_gets_an_error_not_the_roster(
    tmp_path: Any, open_socket: SocketOpener
) -> None:
    """Pusher answers a subscribe to a channel the socket is already on with pusher:error
    "Existing subscription to channel ..." (code null). Tidings used to resend
    subscription_succeeded, with the whole roster on presence channels: ~100 KB out for each
    ~1 KB in."""
    srv = start_server(tmp_path, {}, [CROWDED])
    key, secret = CROWDED["key"], CROWDED["secret"]
    channel = unique("presence-crowd")
    opened: list[PusherSocket] = []

    async def join(user_id: str) -> PusherSocket:
        sock = await open_socket(srv.ws_url, key)
        opened.append(sock)
        data = json.dumps({"user_id": user_id, "user_info": CROWD_INFO})
        auth = channel_auth(sock.socket_id, channel, data, key=key, secret=secret)
        await sock.subscribe(channel, auth, data)
        return sock

    try:
        for start in range(0, CROWD, 20):
            await asyncio.gather(*(join(f"user-{i}") for i in range(start, start + 20)))
        sock = await open_socket(srv.ws_url, key)
        opened.append(sock)
        data = json.dumps({"user_id": "repeater", "user_info": CROWD_INFO})
        auth = channel_auth(sock.socket_id, channel, data, key=key, secret=secret)
        request = json.dumps(
            {
                "event": "pusher:subscribe",
                "data": {"channel": channel, "auth": auth, "channel_data": data},
            }
        )
        await sock.send_raw(request)
        first = await sock.expect("pusher_internal:subscription_succeeded", channel)
        roster_bytes = len(json.dumps(first).encode())
        assert json.loads(first["data"])["presence"]["count"] == CROWD + 1

        duplicates = 100
        for _ in range(duplicates):
            await sock.send_raw(request)
        await sock.send_event("pusher:ping", {})
        replies: list[dict[str, Any]] = []
        returned = 0
        async with asyncio.timeout(4 * TIMEOUT):
            while True:
                frame = await sock.ws.recv()
                assert isinstance(frame, str)
                message = json.loads(frame)
                if message["event"] == "pusher:pong":
                    break
                returned += len(frame.encode())
                replies.append(message)
        sent = duplicates * len(request.encode())
        print(
            f"\n{duplicates} duplicate subscribes to a {CROWD + 1}-member channel: "
            f"{sent} bytes sent, {returned} bytes returned (one roster: {roster_bytes} bytes)"
        )
        events = [m["event"] for m in replies]
        assert "pusher_internal:subscription_succeeded" not in events, (returned, events[:3])
        expected = {"code": None, "message": f"Existing subscription to channel {channel}"}
        assert [m["data"] for m in replies] == [expected] * duplicates, replies[:3]
        assert returned < sent  # nothing to amplify
        # Still a member, once: the roster seen by a newcomer counts it once.
        newcomer = await open_socket(srv.ws_url, key)
        data = json.dumps({"user_id": "newcomer"})
        auth = channel_auth(newcomer.socket_id, channel, data, key=key, secret=secret)
        roster = await newcomer.subscribe(channel, auth, data)
        assert json.loads(roster["data"])["presence"]["count"] == CROWD + 2
    finally:
        # Close while the server still answers: each close would otherwise wait TIMEOUT.
        await asyncio.gather(*(s.close() for s in opened))
        srv.stop()


async def test_client_events_per_second_4301(srv: ServerProcess, open_socket: SocketOpener) -> None:
    channel = unique("private-chat")
    noisy = await open_socket(srv.ws_url, LIMITED["key"])
    polite = await open_socket(srv.ws_url, LIMITED["key"])
    listener = await open_socket(srv.ws_url, LIMITED["key"])
    for sock in (noisy, polite, listener):
        await sock.subscribe(channel, sign(sock, channel))
    for i in range(8):
        await noisy.send_event("client-noise", {"i": i}, channel)
    # The budget is per connection: the polite one spends its own at the same moment.
    for i in range(3):
        await polite.send_event("client-polite", {"i": i}, channel)
    await noisy.send_event("pusher:ping", {})
    codes = []
    while (message := await noisy.recv(ignore={"client-polite"}))["event"] != "pusher:pong":
        assert message["event"] == "pusher:error", message
        codes.append(message["data"]["code"])
    assert codes and set(codes) == {4301}, codes
    got = await listener.recv_n(8 - len(codes) + 3)
    polite_seen = [json.loads(m["data"])["i"] for m in got if m["event"] == "client-polite"]
    assert polite_seen == [0, 1, 2], got
    # 4301 keeps the connection open.
    await noisy.send_event("pusher:ping", {})
    await noisy.expect(
        "pusher:pong", ignore={"client-polite", "pusher_internal:subscription_count"}
    )


# --- the REST API ------------------------------------------------------------------------


async def test_backend_events_per_second_429(srv: ServerProcess, open_socket: SocketOpener) -> None:
    other, channel = await bystander(open_socket, srv)
    statuses = [trigger(srv, "busy", "e", "d", THROTTLED) for _ in range(8)]
    assert statuses[0] == 200 and 429 in statuses, statuses
    resp = rest_request(
        srv.http_url,
        "POST",
        f"/apps/{THROTTLED['id']}/events",
        json_body={"name": "e", "channel": "busy", "data": "d"},
        key=THROTTLED["key"],
        secret=THROTTLED["secret"],
    )
    if resp.status != 200:
        assert_error_response(resp, 429)
    # Another app's budget is its own: it publishes in the same second.
    await assert_still_served(srv, other, channel)


async def test_rest_body_over_max_request_body_413(
    srv: ServerProcess, open_socket: SocketOpener
) -> None:
    other, channel = await bystander(open_socket, srv)
    resp = rest_request(
        srv.http_url,
        "POST",
        f"/apps/{LIMITED['id']}/events",
        json_body={"name": "e", "channel": channel, "data": "x" * 3000},
        key=LIMITED["key"],
        secret=LIMITED["secret"],
    )
    assert_error_response(resp, 413)
    await assert_still_served(srv, other, channel)


# --- connections -------------------------------------------------------------------------


async def test_connections_per_app_4004(srv: ServerProcess, open_socket: SocketOpener) -> None:
    other, channel = await bystander(open_socket, srv)  # another app
    first, first_channel = await bystander(open_socket, srv, SMALL)
    await open_socket(srv.ws_url, SMALL["key"])
    refused = await open_socket(srv.ws_url, SMALL["key"], handshake=False)
    error = await refused.recv(ignore=())
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4004, error
    assert (await refused.wait_closed()).code == 4004
    await assert_still_served(srv, first, first_channel, SMALL)
    await assert_still_served(srv, other, channel)


async def test_connections_per_node_4100(tmp_path: Any, open_socket: SocketOpener) -> None:
    srv = start_server(tmp_path, {"max_connections": 2}, [LIMITED, SMALL])
    try:
        first, channel = await bystander(open_socket, srv)
        await open_socket(srv.ws_url, SMALL["key"])
        for key in (LIMITED["key"], SMALL["key"]):  # the node is full, whatever the app
            refused = await open_socket(srv.ws_url, key, handshake=False)
            error = await refused.recv(ignore=())
            assert error["event"] == "pusher:error" and error["data"]["code"] == 4100, error
            assert (await refused.wait_closed()).code == 4100
        await assert_still_served(srv, first, channel)
    finally:
        srv.stop()


async def upgrade(port: int, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Send a WebSocket upgrade (or a fallback POST) by hand; status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Length: 0"]
        if method == "GET":
            lines += [
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


async def test_new_connections_per_second_503(tmp_path: Any, open_socket: SocketOpener) -> None:
    srv = start_server(tmp_path, {"max_connection_rate": 5}, [LIMITED])
    try:
        other, channel = await bystander(open_socket, srv)
        target = f"/app/{LIMITED['key']}?protocol=7&client=js&version=8.6.0"
        answers = await asyncio.gather(*(upgrade(srv.port, target) for _ in range(15)))
        statuses = sorted(status for status, _, _ in answers)
        # At most one second of burst (5) passes; the rest is refused before the upgrade.
        assert 1 <= statuses.count(101) <= 6 and statuses.count(503) >= 9, statuses
        for status, headers, body in answers:
            if status == 503:
                assert headers["retry-after"] == "1", headers
                assert headers["content-type"].startswith("application/json"), headers
                assert isinstance(json.loads(body)["error"], str), body
        # A new HTTP fallback session counts as a new connection too.
        session = unique("s").replace("-", "")  # letters and digits, as pusher-js makes them
        fallback = f"/pusher/app/{LIMITED['key']}/123/{session}/xhr_streaming?protocol=7"
        status, headers, body = await upgrade(srv.port, fallback, method="POST")
        assert status == 503 and headers["retry-after"] == "1", (status, headers)
        assert "error" in json.loads(body)
        # The connected client never noticed.
        await assert_still_served(srv, other, channel)
        # After Retry-After, connecting works again.
        await asyncio.sleep(1.0)
        sock = await open_socket(srv.ws_url, LIMITED["key"])
        await sock.ping()
    finally:
        srv.stop()


async def test_unlimited_connection_rate(tmp_path: Any) -> None:
    srv = start_server(tmp_path, {"max_connection_rate": 0}, [LIMITED])
    try:
        target = f"/app/{LIMITED['key']}?protocol=7&client=js&version=8.6.0"
        answers = await asyncio.gather(*(upgrade(srv.port, target) for _ in range(30)))
        assert [status for status, _, _ in answers] == [101] * 30
    finally:
        srv.stop()
