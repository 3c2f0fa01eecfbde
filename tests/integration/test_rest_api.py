"""The HTTP API, driven by the official `pusher` Python SDK (3.3.4) and by hand-signed requests.

The SDK proves interoperability (its signing, its paths, its body_md5 on GETs); the raw requests
break one thing at a time to pin down each error status.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pusher
import pusher.errors
import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    DISABLED_APP_ID,
    DISABLED_KEY,
    DISABLED_SECRET,
    TIMEOUT,
    HttpResponse,
    PusherSocket,
    SocketOpener,
    assert_error_response,
    eventually,
    hmac_hex,
    query_string,
    raw_http,
    rest_request,
    sdk_client,
    unique,
)

from redis_server import RedisServer
from server_process import ServerProcess, free_port, write_config

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

MASTER_KEY = base64.b64encode(b"k" * 32).decode()


def make_client(port: int, key: str = APP_KEY, secret: str = APP_SECRET) -> pusher.Pusher:
    return sdk_client(port, key, secret, encryption_master_key_base64=MASTER_KEY)


def close_client(client: pusher.Pusher) -> None:
    client._pusher_client.http.session.close()
    client._authentication_client.http.session.close()


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[pusher.Pusher]:
    c = make_client(server.port)
    yield c
    close_client(c)


@pytest.fixture(scope="module", params=["lean", "aiohttp"])
def rest_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server for the REST behaviour the lean path (server/lean_http.py) answers: the
    shared server (``lean_rest`` on, the default), then one with it off."""
    if request.param == "lean":
        yield request.getfixturevalue("server")
        return
    directory = tmp_path_factory.mktemp("tidings-aiohttp-rest")
    apps = [
        {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET},
        {"id": DISABLED_APP_ID, "key": DISABLED_KEY, "secret": DISABLED_SECRET, "enabled": False},
    ]
    config = write_config(directory / "tidings.toml", {"lean_rest": False}, apps)
    srv = ServerProcess(free_port(), config, directory / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rest_client(rest_server: ServerProcess) -> Iterator[pusher.Pusher]:
    c = make_client(rest_server.port)
    yield c
    close_client(c)


def post(http_url: str, path: str, payload: Any, **kwargs: Any) -> HttpResponse:
    return rest_request(http_url, "POST", path, json_body=payload, **kwargs)


def events_path(app_id: str = APP_ID) -> str:
    return f"/apps/{app_id}/events"


def event(channel: str, name: str = "e", data: str = "d") -> dict[str, Any]:
    return {"name": name, "channel": channel, "data": data}


# --- triggering --------------------------------------------------------------------------


async def test_trigger_delivers_the_sdk_data_verbatim(
    rest_server: Any, rest_client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    channel = unique("news")
    sock = await open_socket(rest_server.ws_url)
    await sock.subscribe(channel)

    assert rest_client.trigger(channel, "my-event", {"text": "h\u00e9llo", "n": 1}) == {}
    message = await sock.expect("my-event", channel)
    # The SDK sends json.dumps(data, ensure_ascii=False); the server relays that string as is.
    assert message == {
        "event": "my-event",
        "channel": channel,
        "data": json.dumps({"text": "h\u00e9llo", "n": 1}, ensure_ascii=False),
    }

    assert rest_client.trigger(channel, "plain", "just a string") == {}
    assert (await sock.expect("plain", channel))["data"] == "just a string"
    await sock.assert_silent()


async def test_trigger_to_channel_list_excluding_a_socket(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    first, second = unique("list-a"), unique("list-b")
    excluded = await open_socket(server.ws_url)
    same_channel = await open_socket(server.ws_url)
    other_channel = await open_socket(server.ws_url)
    both = await open_socket(server.ws_url)
    await excluded.subscribe(first)
    await same_channel.subscribe(first)
    await other_channel.subscribe(second)
    await both.subscribe(first)
    await both.subscribe(second)

    assert client.trigger([first, second], "multi", {"k": "v"}, excluded.socket_id) == {}
    assert (await same_channel.expect("multi", first))["data"] == '{"k": "v"}'
    assert (await other_channel.expect("multi", second))["data"] == '{"k": "v"}'
    got = await both.recv_n(2)
    assert sorted(m["channel"] for m in got) == sorted([first, second]), got
    await excluded.assert_silent()
    await both.assert_silent()

    # The exclusion is for that one trigger only.
    assert client.trigger(first, "again", "x") == {}
    await excluded.expect("again", first)


async def test_trigger_batch(
    rest_server: Any, rest_client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    first, second = unique("batch-a"), unique("batch-b")
    sock = await open_socket(rest_server.ws_url)
    await sock.subscribe(first)
    await sock.subscribe(second)
    batch = [
        {"channel": first, "name": "one", "data": {"i": 1}},
        {"channel": second, "name": "two", "data": "second"},
        {"channel": first, "name": "three", "data": {"i": 3}},
    ]
    assert rest_client.trigger_batch(batch) == {}
    got = await sock.recv_n(3)
    assert [(m["event"], m["channel"], m["data"]) for m in got] == [
        ("one", first, '{"i": 1}'),
        ("two", second, "second"),
        ("three", first, '{"i": 3}'),
    ]


async def test_trigger_with_info_returns_counts(
    rest_server: Any, open_socket: SocketOpener
) -> None:
    public, presence = unique("info-pub"), unique("presence-info")
    a = await open_socket(rest_server.ws_url)
    b = await open_socket(rest_server.ws_url)
    await a.subscribe(public)
    await b.subscribe(public)
    await a.subscribe_presence(presence, "u1")

    resp = post(
        rest_server.http_url,
        events_path(),
        {"name": "e", "channels": [public], "data": "d", "info": "subscription_count"},
    )
    assert resp.status == 200, resp
    assert resp.json() == {"channels": {public: {"subscription_count": 2}}}

    resp = post(
        rest_server.http_url,
        events_path(),
        {"name": "e", "channel": presence, "data": "d", "info": "user_count"},
    )
    assert resp.status == 200, resp
    assert resp.json() == {"channels": {presence: {"user_count": 1}}}

    resp = post(
        rest_server.http_url,
        f"/apps/{APP_ID}/batch_events",
        {"batch": [{**event(public), "info": "subscription_count"}, event(public)]},
    )
    assert resp.status == 200, resp
    assert resp.json() == {"batch": [{"subscription_count": 2}, {}]}


async def test_cache_channel_replays_last_event(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    channel = unique("cache-scores")
    early = await open_socket(server.ws_url)
    await early.subscribe(channel)
    await early.expect("pusher:cache_miss", channel)

    assert client.trigger(channel, "score", "1-0") == {}
    assert client.trigger(channel, "score", "2-0") == {}
    assert [m["data"] for m in await early.recv_n(2)] == ["1-0", "2-0"]

    late = await open_socket(server.ws_url)
    await late.subscribe(channel)
    assert await late.recv() == {"event": "score", "channel": channel, "data": "2-0"}

    info = client.channel_info(channel, ["cache"])
    assert info["occupied"] is True, info
    assert info["cache"]["data"] == "2-0", info


@pytest.mark.parametrize("lean_rest", [True, False], ids=["lean", "aiohttp"])
def test_backend_rate_limit_is_429(make_server: Any, lean_rest: bool) -> None:
    srv = make_server(
        lean_rest=lean_rest,
        apps=[
            {
                "id": APP_ID,
                "key": APP_KEY,
                "secret": APP_SECRET,
                "max_backend_events_per_second": 2,
            }
        ],
    )
    statuses: list[int] = []
    for _ in range(6):
        resp = post(srv.http_url, events_path(), event("c"))
        statuses.append(resp.status)
        if resp.status != 200:
            assert_error_response(resp, 429)
    assert statuses[:2] == [200, 200], statuses
    assert 429 in statuses, statuses


# --- querying ----------------------------------------------------------------------------


async def test_channels_info_prefix_filter_and_user_count(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    tag = unique("t")
    room_a, room_b = f"presence-{tag}-a", f"presence-{tag}-b"
    public = f"{tag}-public"
    socks = [await open_socket(server.ws_url) for _ in range(4)]
    await socks[0].subscribe_presence(room_a, "u1")
    await socks[1].subscribe_presence(room_a, "u1")  # same user twice: one member
    await socks[2].subscribe_presence(room_a, "u2")
    await socks[3].subscribe_presence(room_b, "u3")
    await socks[3].subscribe(public)

    result = client.channels_info(f"presence-{tag}-", ["user_count"])
    assert set(result["channels"]) == {room_a, room_b}, result
    assert result["channels"][room_a]["user_count"] == 2, result
    assert result["channels"][room_b]["user_count"] == 1, result

    result = client.channels_info(tag)
    assert set(result["channels"]) == {public}, result

    everything = client.channels_info()
    assert {room_a, room_b, public} <= set(everything["channels"]), everything

    # Only occupied channels are listed.
    await socks[3].close()

    async def room_b_vacated() -> bool:
        return set(client.channels_info(f"presence-{tag}-")["channels"]) == {room_a}

    await eventually(room_b_vacated)


async def test_channel_info_counts(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    public, presence = unique("ci-pub"), unique("presence-ci")
    socks = [await open_socket(server.ws_url) for _ in range(3)]
    for sock in socks:
        await sock.subscribe(public)
    await socks[0].subscribe_presence(presence, "u1")
    await socks[1].subscribe_presence(presence, "u2")
    await socks[2].subscribe_presence(presence, "u2")

    info = client.channel_info(public, ["subscription_count"])
    assert info["occupied"] is True and info["subscription_count"] == 3, info
    info = client.channel_info(presence, ["user_count"])
    assert info["occupied"] is True and info["user_count"] == 2, info
    info = client.channel_info(public)
    assert info["occupied"] is True, info
    info = client.channel_info(unique("nobody-here"))
    assert info["occupied"] is False, info


async def test_presence_channel_info_gives_user_and_subscription_counts(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    # Pusher answers both on a presence channel: user_count counts users, subscription_count
    # sockets (one user on two sockets is one user, two subscriptions).
    presence = unique("presence-both")
    socks = [await open_socket(server.ws_url) for _ in range(3)]
    await socks[0].subscribe_presence(presence, "u1")
    await socks[1].subscribe_presence(presence, "u2")
    await socks[2].subscribe_presence(presence, "u2")

    info = client.channel_info(presence, ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}, info

    path = f"/apps/{APP_ID}/channels/{presence}"
    resp = rest_request(server.http_url, "GET", path, params={"info": "subscription_count"})
    assert resp.status == 200, resp
    assert resp.json() == {"occupied": True, "subscription_count": 3}

    resp = post(
        server.http_url,
        events_path(),
        {"name": "e", "channel": presence, "data": "d", "info": "user_count,subscription_count"},
    )
    assert resp.status == 200, resp
    assert resp.json() == {"channels": {presence: {"user_count": 2, "subscription_count": 3}}}

    resp = rest_request(
        server.http_url,
        "GET",
        f"/apps/{APP_ID}/channels",
        params={"filter_by_prefix": presence, "info": "user_count,subscription_count"},
    )
    assert resp.status == 200, resp
    assert resp.json() == {"channels": {presence: {"user_count": 2, "subscription_count": 3}}}


def test_bad_signature_401_names_the_string_to_sign(rest_server: Any) -> None:
    # Pusher's 401 body says what the server signed, so a client can find its mistake.
    stamp = int(time.time())
    resp = rest_request(
        rest_server.http_url,
        "GET",
        f"/apps/{APP_ID}/channels",
        params={"info": "user_count", "filter_by_prefix": "presence-"},
        timestamp=stamp,
        signature="0" * 64,
    )
    assert_error_response(resp, 401)
    signed = (
        f"GET\n/apps/{APP_ID}/channels\nauth_key={APP_KEY}&auth_timestamp={stamp}"
        "&auth_version=1.0&filter_by_prefix=presence-&info=user_count"
    )
    assert resp.json() == {
        "error": f"Invalid signature: you should have sent HmacSHA256Hex({json.dumps(signed)},"
        f' your_secret_key), but you sent "{"0" * 64}"'
    }
    assert APP_SECRET not in resp.body.decode()
    assert hmac_hex(APP_SECRET, signed) not in resp.body.decode()


async def test_users_info(server: Any, client: pusher.Pusher, open_socket: SocketOpener) -> None:
    channel = unique("presence-users")
    socks = [await open_socket(server.ws_url) for _ in range(3)]
    await socks[0].subscribe_presence(channel, "1", {"name": "one"})
    await socks[1].subscribe_presence(channel, "2")
    await socks[2].subscribe_presence(channel, "2")
    users = client.users_info(channel)
    assert sorted(users["users"], key=lambda u: u["id"]) == [{"id": "1"}, {"id": "2"}], users


# --- authentication signatures made by the SDK -------------------------------------------


async def test_sdk_channel_signatures_are_accepted(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    alice = await open_socket(server.ws_url)
    bob = await open_socket(server.ws_url)

    for channel in (unique("private-sdk"), unique("private-encrypted-sdk")):
        auth = client.authenticate(channel, alice.socket_id)
        await alice.subscribe(channel, auth["auth"])

    channel = unique("presence-sdk")
    auth = client.authenticate(channel, alice.socket_id, {"user_id": "alice", "user_info": {}})
    message = await alice.subscribe(channel, auth["auth"], auth["channel_data"])
    assert json.loads(message["data"])["presence"]["ids"] == ["alice"]

    auth = client.authenticate(
        channel, bob.socket_id, {"user_id": "bob", "user_info": {"name": "Bob"}}
    )
    await bob.subscribe(channel, auth["auth"], auth["channel_data"])
    added = await alice.expect("pusher_internal:member_added", channel)
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}

    # A signature made for another socket is refused.
    channel = unique("private-stolen")
    stolen = client.authenticate(channel, alice.socket_id)
    await bob.send_subscribe(channel, stolen["auth"])
    error = await bob.subscription_error(channel)
    assert error["status"] == 401, error


async def test_sdk_user_signature_signs_in(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    sock = await open_socket(server.ws_url)
    user = {"id": unique("user"), "user_info": {"name": "Ann"}}
    auth = client.authenticate_user(sock.socket_id, user)
    await sock.send_event("pusher:signin", {"auth": auth["auth"], "user_data": auth["user_data"]})
    message = await sock.expect("pusher:signin_success")
    assert isinstance(message["data"], str), message
    assert json.loads(message["data"]) == {"user_data": auth["user_data"]}
    await sock.ping()


async def signed_in(opener: SocketOpener, server: Any, user_id: str) -> PusherSocket:
    sock = await opener(server.ws_url)
    await sock.signin({"id": user_id})
    return sock


async def test_send_to_user(server: Any, client: pusher.Pusher, open_socket: SocketOpener) -> None:
    user, other = unique("u"), unique("u")
    mine = [await signed_in(open_socket, server, user) for _ in range(2)]
    theirs = await signed_in(open_socket, server, other)
    anonymous = await open_socket(server.ws_url)

    assert client.send_to_user(user, "direct", {"for": "you"}) == {}
    for sock in mine:
        message = await sock.expect("direct")
        assert message["channel"] == f"#server-to-user-{user}", message
        assert json.loads(message["data"]) == {"for": "you"}
        await sock.assert_silent()  # once per socket, even if also subscribed
    await theirs.assert_silent()
    await anonymous.assert_silent()


async def test_terminate_user_connections(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    user, other = unique("u"), unique("u")
    doomed = [await signed_in(open_socket, server, user) for _ in range(2)]
    survivor = await signed_in(open_socket, server, other)
    anonymous = await open_socket(server.ws_url)

    # The Python SDK posts to /users/{id}/terminate_connections, without /apps/{id}.
    assert client.terminate_user_connections(user) == {}
    for sock in doomed:
        closed = await sock.wait_closed()
        assert closed.code == 4009, closed
        errors = [m for m in closed.messages if m.get("event") == "pusher:error"]
        assert [e["data"]["code"] for e in errors] == [4009], closed.messages
    await survivor.ping()
    await anonymous.ping()

    # The prefixed path (pusher-http-node) does the same.
    resp = post(server.http_url, f"/apps/{APP_ID}/users/{other}/terminate_connections", {})
    assert resp.status == 200 and resp.json() == {}, resp
    assert (await survivor.wait_closed()).code == 4009
    await anonymous.ping()


def test_sdk_raises_on_errors(rest_server: Any, rest_client: pusher.Pusher) -> None:
    wrong = make_client(rest_server.port, secret="wrong-secret")
    try:
        with pytest.raises(pusher.errors.PusherBadAuth):
            wrong.trigger("c", "e", "d")
    finally:
        close_client(wrong)
    with pytest.raises(pusher.errors.PusherBadRequest):
        rest_client.channel_info(unique("public"), ["user_count"])


# --- hand-signed requests: the happy path the error cases are measured against -----------


def test_hand_signed_requests_are_accepted(rest_server: Any) -> None:
    resp = post(rest_server.http_url, events_path(), event("c"))
    assert resp.status == 200 and resp.json() == {}, resp
    # GET without body_md5 (pusher-http-node) and with the empty-body MD5 (pusher-http-python).
    path = f"/apps/{APP_ID}/channels"
    resp = rest_request(rest_server.http_url, "GET", path)
    assert resp.status == 200 and "channels" in resp.json(), resp
    resp = rest_request(rest_server.http_url, "GET", path, body_md5=hashlib.md5(b"").hexdigest())
    assert resp.status == 200, resp
    # Inside the ±600 s window on either side.
    for skew in (-550, 550):
        resp = post(
            rest_server.http_url, events_path(), event("c"), timestamp=int(time.time()) + skew
        )
        assert resp.status == 200, (skew, resp)


# --- errors ------------------------------------------------------------------------------


def _bad_auth_cases() -> dict[str, dict[str, Any]]:
    return {
        "bad-signature": {"signature": "0" * 64},
        "signature-with-wrong-secret": {"secret": "not-the-secret"},
        "timestamp-too-old": {"timestamp": int(time.time()) - 700},
        "timestamp-too-new": {"timestamp": int(time.time()) + 700},
        "unknown-auth-key": {"key": "no-such-key"},
        "other-apps-key": {"key": DISABLED_KEY, "secret": DISABLED_SECRET},
        "body-md5-mismatch": {"body_md5": hashlib.md5(b"another body").hexdigest()},
        "body-without-body-md5": {"body_md5": None},
    }


@pytest.mark.parametrize("case", list(_bad_auth_cases()))
def test_authentication_failures_are_401(rest_server: Any, case: str) -> None:
    resp = post(rest_server.http_url, events_path(), event("c"), **_bad_auth_cases()[case])
    assert_error_response(resp, 401)


def test_missing_auth_params_are_401(rest_server: Any) -> None:
    for target in (events_path(), f"{events_path()}?auth_key={APP_KEY}"):
        resp = raw_http(rest_server.http_url, "POST", target, body=b"{}")
        assert_error_response(resp, 401)


def test_signature_over_another_method_is_401(rest_server: Any) -> None:
    path = f"/apps/{APP_ID}/channels"
    query = {"auth_key": APP_KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    query["auth_signature"] = hmac_hex(APP_SECRET, f"POST\n{path}\n{query_string(query)}")
    resp = raw_http(rest_server.http_url, "GET", f"{path}?{query_string(query)}")
    assert_error_response(resp, 401)


UNKNOWN_APP_ID = "99999"
# Every endpoint under /apps/{id}, signed with a configured app's real key and secret.
APP_ENDPOINTS = [
    ("POST", "/events", {"name": "e", "channel": "c", "data": "d"}),
    ("POST", "/batch_events", {"batch": [{"name": "e", "channel": "c", "data": "d"}]}),
    ("GET", "/channels", None),
    ("GET", "/channels/presence-c", None),
    ("GET", "/channels/presence-c/users", None),
    ("POST", "/users/u1/terminate_connections", None),
]


@pytest.mark.parametrize(("method", "tail", "payload"), APP_ENDPOINTS)
def test_unknown_app_id_is_401_like_a_bad_key(
    rest_server: Any, method: str, tail: str, payload: Any
) -> None:
    """An unknown app id is answered exactly as a known id with a wrong key, so probing ids
    (404 for unknown, 401 for known) tells nothing."""

    def send(app_id: str, **creds: Any) -> HttpResponse:
        return rest_request(
            rest_server.http_url, method, f"/apps/{app_id}{tail}", json_body=payload, **creds
        )

    unknown_id = send(UNKNOWN_APP_ID)
    assert_error_response(unknown_id, 401)
    for creds in (
        {"key": "no-such-key"},
        {"key": DISABLED_KEY, "secret": DISABLED_SECRET},  # another app's own credentials
    ):
        bad_key = send(APP_ID, **creds)
        assert (bad_key.status, bad_key.json()) == (unknown_id.status, unknown_id.json())
        # An unknown id answers the same whatever key it is sent with.
        other = send(UNKNOWN_APP_ID, **creds)
        assert (other.status, other.json()) == (unknown_id.status, unknown_id.json())
    assert "99999" not in unknown_id.body.decode()


def test_unknown_app_id_with_the_sdk_is_bad_auth(rest_server: Any) -> None:
    """The Python SDK raises PusherBadAuth (401) for an unknown id, as for a wrong key."""
    bodies = []
    for app_id, key in ((UNKNOWN_APP_ID, APP_KEY), (APP_ID, "no-such-key")):
        client = pusher.Pusher(
            app_id=app_id,
            key=key,
            secret=APP_SECRET,
            host="127.0.0.1",
            port=rest_server.port,
            ssl=False,
            timeout=TIMEOUT,
        )
        try:
            with pytest.raises(pusher.errors.PusherBadAuth) as raised:
                client.trigger("c", "e", "d")
            bodies.append(str(raised.value))
            with pytest.raises(pusher.errors.PusherBadAuth):
                client.channels_info()
        finally:
            close_client(client)
    assert bodies[0] == bodies[1], bodies


def test_disabled_app_is_403(rest_server: Any) -> None:
    creds: dict[str, Any] = {"key": DISABLED_KEY, "secret": DISABLED_SECRET}
    resp = post(rest_server.http_url, events_path(DISABLED_APP_ID), event("c"), **creds)
    assert_error_response(resp, 403)
    resp = rest_request(rest_server.http_url, "GET", f"/apps/{DISABLED_APP_ID}/channels", **creds)
    assert_error_response(resp, 403)


def test_event_data_over_max_event_payload_bytes_is_413(rest_server: Any) -> None:
    resp = post(rest_server.http_url, events_path(), event("c", data="x" * 10240))
    assert resp.status == 200, resp
    resp = post(rest_server.http_url, events_path(), event("c", data="x" * 10241))
    assert_error_response(resp, 413)
    # Bytes, not characters: 5121 two-byte characters are 10242 bytes.
    resp = post(rest_server.http_url, events_path(), event("c", data="\u00e9" * 5121))
    assert_error_response(resp, 413)
    batch = {"batch": [event("c"), event("c", data="x" * 10241)]}
    assert_error_response(post(rest_server.http_url, f"/apps/{APP_ID}/batch_events", batch), 413)


def test_too_many_channels_is_400(rest_server: Any) -> None:
    channels = [f"c{i}" for i in range(101)]
    payload = {"name": "e", "channels": channels[:100], "data": "d"}
    assert post(rest_server.http_url, events_path(), payload).status == 200
    payload["channels"] = channels
    assert_error_response(post(rest_server.http_url, events_path(), payload), 400)


def test_batch_over_max_batch_size_is_400(rest_server: Any) -> None:
    path = f"/apps/{APP_ID}/batch_events"
    assert post(rest_server.http_url, path, {"batch": [event("c")] * 10}).status == 200
    assert_error_response(post(rest_server.http_url, path, {"batch": [event("c")] * 11}), 400)


BAD_BODIES: dict[str, tuple[str, bytes]] = {
    "not-json": ("events", b"{not json"),
    "json-array": ("events", b"[]"),
    "empty-object": ("events", b"{}"),
    "no-name": ("events", b'{"channel": "c", "data": "d"}'),
    "no-channel": ("events", b'{"name": "e", "data": "d"}'),
    "no-data": ("events", b'{"name": "e", "channel": "c"}'),
    "data-not-string": ("events", b'{"name": "e", "channel": "c", "data": {"a": 1}}'),
    "channels-not-list": ("events", b'{"name": "e", "channels": "c", "data": "d"}'),
    "bad-channel-name": ("events", b'{"name": "e", "channel": "bad channel", "data": "d"}'),
    "bad-socket-id": ("events", b'{"name": "e", "channel": "c", "data": "d", "socket_id": "x"}'),
    "batch-not-json": ("batch_events", b"{batch"),
    "batch-not-list": ("batch_events", b'{"batch": {}}'),
    "batch-item-invalid": ("batch_events", b'{"batch": [{"name": "e"}]}'),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_malformed_body_is_400(rest_server: Any, case: str) -> None:
    endpoint, body = BAD_BODIES[case]
    resp = rest_request(rest_server.http_url, "POST", f"/apps/{APP_ID}/{endpoint}", body=body)
    assert_error_response(resp, 400)


async def test_user_count_on_non_presence_channel_is_400(
    server: Any, open_socket: SocketOpener
) -> None:
    public = unique("not-presence")
    sock = await open_socket(server.ws_url)
    await sock.subscribe(public)
    cases = [
        (f"/apps/{APP_ID}/channels/{public}", {"info": "user_count"}),
        (f"/apps/{APP_ID}/channels", {"info": "user_count"}),
        (f"/apps/{APP_ID}/channels", {"info": "user_count", "filter_by_prefix": "private-"}),
        (f"/apps/{APP_ID}/channels/{public}/users", {}),
    ]
    for path, params in cases:
        resp = rest_request(server.http_url, "GET", path, params=params)
        assert_error_response(resp, 400)


def test_body_over_max_request_body_is_413(rest_server: Any) -> None:
    payload = {"name": "e", "channel": "c", "data": "x" * 300_000}
    assert_error_response(post(rest_server.http_url, events_path(), payload), 413)


def chunked_trigger(rest_server: Any, body: bytes) -> HttpResponse:
    """A signed trigger whose body is sent chunked (RFC 9112 7.1), in 1 KiB chunks."""
    path = events_path()
    query = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query["auth_signature"] = hmac_hex(APP_SECRET, f"POST\n{path}\n{query_string(query)}")
    chunks = [body[i : i + 1024] for i in range(0, len(body), 1024)]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    return raw_http(
        rest_server.http_url, "POST", f"{path}?{query_string(query)}", body=wire, headers=headers
    )


async def test_a_chunked_trigger_is_accepted(rest_server: Any, open_socket: SocketOpener) -> None:
    channel = unique("chunked")
    sock = await open_socket(rest_server.ws_url)
    await sock.subscribe(channel)
    resp = chunked_trigger(rest_server, json.dumps(event(channel, "e", "x" * 3000)).encode())
    assert resp.status == 200 and resp.json() == {}, resp
    assert (await sock.expect("e", channel))["data"] == "x" * 3000


def test_a_chunked_body_over_max_request_body_is_413(rest_server: Any) -> None:
    resp = chunked_trigger(rest_server, json.dumps(event("c", "e", "x" * 300_000)).encode())
    assert_error_response(resp, 413)


def test_wrong_method_is_405_and_unknown_path_is_404(rest_server: Any) -> None:
    assert_error_response(rest_request(rest_server.http_url, "GET", events_path()), 405)
    assert_error_response(rest_request(rest_server.http_url, "GET", f"/apps/{APP_ID}/nope"), 404)


def test_root_and_ready(server: Any) -> None:
    resp = raw_http(server.http_url, "GET", "/")
    assert resp.status == 200 and resp.json()["name"] == "tidings", resp
    resp = raw_http(server.http_url, "GET", "/ready")
    assert resp.status == 200, resp
    assert resp.json() == {"ready": True, "broker": "memory", "degraded": False, "node": "memory"}


# --- channel history ---------------------------------------------------------------------

HISTORY_APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "client_events": True,
        "history": [
            {"pattern": "history-short-*", "size": 3, "ttl": 60},
            {"pattern": "*history-*", "size": 100, "ttl": 60},
        ],
    }
]


@pytest.fixture(scope="module")
def history_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("tidings-history")
    config = write_config(directory / "tidings.toml", {}, HISTORY_APPS)
    srv = ServerProcess(free_port(), config, directory / "server.log")
    srv.start()
    yield srv
    srv.stop()


def sdk_history(client: pusher.Pusher, channel: str, **params: str) -> Any:
    """The history read, signed by the pusher SDK's own request signing (it has no method
    for it: the request is built and sent as its channel_info is)."""
    inner = client._pusher_client
    path = f"/apps/{APP_ID}/channels/{channel}/history"
    return inner.http.send_request(pusher.http.Request(inner, pusher.http.GET, path, params))


def history_of(server: Any, channel: str, **params: str) -> HttpResponse:
    path = f"/apps/{APP_ID}/channels/{channel}/history"
    return rest_request(server.http_url, "GET", path, params=params)


def test_history_lists_what_was_published_in_order(history_server: Any) -> None:
    client = make_client(history_server.port)
    try:
        channel = unique("history-rest")
        for n in range(1, 4):
            client.trigger(channel, "e", {"n": n}, "1.2" if n == 2 else None)
        page = sdk_history(client, channel)
        assert set(page) == {"epoch", "offset", "complete", "events"}
        assert (page["offset"], page["complete"]) == (3, True)
        assert page["events"] == [
            {"offset": n, "event": "e", "channel": channel, "data": json.dumps({"n": n})}
            for n in range(1, 4)
        ]
        later = sdk_history(client, channel, since="1", limit="1")
        assert later["epoch"] == page["epoch"] and later["complete"]
        assert [e["offset"] for e in later["events"]] == [2]
        top = sdk_history(client, channel, since="3")
        assert (top["events"], top["complete"]) == ([], True)
    finally:
        close_client(client)


def test_history_trimmed_below_since_is_not_complete(history_server: Any) -> None:
    channel = unique("history-short")
    for n in range(1, 6):
        resp = post(history_server.http_url, events_path(), event(channel, data=str(n)))
        assert resp.status == 200, resp
    page = history_of(history_server, channel, since="0").json()
    assert [e["offset"] for e in page["events"]] == [3, 4, 5]
    assert page["complete"] is False
    assert history_of(history_server, channel, since="2").json()["complete"] is True


async def test_history_keeps_client_events_but_never_presence_member_events(
    history_server: Any, open_socket: SocketOpener
) -> None:
    channel = unique("presence-history")
    alice = await open_socket(history_server.ws_url)
    bob = await open_socket(history_server.ws_url)
    await alice.subscribe_presence(channel, "alice")
    await bob.subscribe_presence(channel, "bob")
    await alice.expect("pusher_internal:member_added", channel)
    await bob.send_event("client-typing", {"on": True}, channel)
    received = await alice.expect("client-typing", channel)
    page = history_of(history_server, channel).json()
    assert page["events"] == [
        {
            "offset": 1,
            "event": "client-typing",
            "channel": channel,
            "data": received["data"],
            "user_id": "bob",
        }
    ]


def test_history_of_a_channel_without_a_rule_is_404(history_server: Any) -> None:
    resp = history_of(history_server, unique("no-rule"))
    assert_error_response(resp, 404)


@pytest.mark.parametrize(
    "params",
    [{"since": "-1"}, {"since": "x"}, {"limit": "0"}, {"limit": "1001"}, {"since": "1e3"}],
)
def test_history_with_bad_parameters_is_400(history_server: Any, params: dict[str, str]) -> None:
    resp = history_of(history_server, unique("history-bad"), **params)
    assert_error_response(resp, 400)
    assert next(iter(params)) in resp.json()["error"]


def test_history_requests_are_signed(history_server: Any) -> None:
    resp = history_of(history_server, unique("history-sig"))
    assert resp.status == 200, resp
    path = f"/apps/{APP_ID}/channels/{unique('history-sig')}/history"
    forged = rest_request(history_server.http_url, "GET", path, signature="0" * 64)
    assert_error_response(forged, 401)
    bad_name = history_of(history_server, "history-bad!name")
    assert_error_response(bad_name, 400)


async def test_history_in_redis_mode_and_503_while_redis_is_unreachable(
    make_server: Any, redis_prefix: str, tmp_path: Any, open_socket: SocketOpener
) -> None:
    port = free_port()  # nothing listens there yet: the node starts degraded
    server = await asyncio.to_thread(
        make_server,
        apps=HISTORY_APPS,
        redis=f"redis://127.0.0.1:{port}/0",
        redis_prefix=redis_prefix,
    )
    channel = unique("history-redis")
    unreachable = history_of(server, channel)
    assert_error_response(unreachable, 503)
    assert unreachable.headers.get("Retry-After") == "1"
    with RedisServer(tmp_path / "redis", port=port):

        async def connected() -> bool:
            resp = raw_http(server.http_url, "GET", "/ready")
            return resp.status == 200 and resp.json()["degraded"] is False

        await eventually(connected, timeout=3 * TIMEOUT)
        listener = await open_socket(server.ws_url)
        await listener.subscribe(channel)
        for n in (1, 2):
            resp = post(server.http_url, events_path(), event(channel, data=str(n)))
            assert resp.status == 200, resp
        # Delivered through the bus with the stream's order, to this node's own socket too.
        assert [(await listener.expect("e", channel))["data"] for _ in (1, 2)] == ["1", "2"]
        page = history_of(server, channel, since="1").json()
        assert (page["offset"], page["complete"]) == (2, True)
        assert [(e["offset"], e["data"]) for e in page["events"]] == [(2, "2")]
        await asyncio.to_thread(server.stop)
