"""The REST API and the HTTP fallbacks served through ASGI: ``tidings.asgi.http.AsgiHttp`` in
a real uvicorn and a real hypercorn (``asgi_http_app.py``), driven by the official ``pusher``
SDK and by a hand-driven pusher-js fallback session (``fallback_helpers.py``), as
``tidings serve`` is in test_rest_api.py and test_fallback_http.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pusher
import pusher.errors
import pytest
from fallback_helpers import SUBSCRIPTION_COUNT, FallbackSession, assert_json_error
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    assert_error_response,
    channel_auth,
    hmac_hex,
    query_string,
    rest_request,
    scrape,
    sdk_client,
    unique,
    value,
)

from asgi_process import AsgiServer, start_asgi

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

MAX_REQUEST_BODY = 4096
MAX_MESSAGE_BYTES = 1024  # an xhr_send body may hold four times this
APP = {
    "id": APP_ID,
    "key": APP_KEY,
    "secret": APP_SECRET,
    "client_events": True,
    "subscription_count": True,
    "max_message_bytes": MAX_MESSAGE_BYTES,
}


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def server_name(request: pytest.FixtureRequest) -> str:
    """Every test runs under both ASGI servers."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def asgi(tmp_path_factory: pytest.TempPathFactory, server_name: str) -> Iterator[AsgiServer]:
    server = start_asgi(
        tmp_path_factory.mktemp("asgi"),
        [APP],
        server=server_name,
        max_request_body=MAX_REQUEST_BODY,
    )
    yield server
    server.stop()


@pytest.fixture
def make_asgi(
    tmp_path_factory: pytest.TempPathFactory, server_name: str
) -> Iterator[Callable[..., AsgiServer]]:
    started: list[AsgiServer] = []

    def factory(**settings: Any) -> AsgiServer:
        server = start_asgi(tmp_path_factory.mktemp("asgi"), [APP], server=server_name, **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def rest(asgi: AsgiServer) -> Iterator[pusher.Pusher]:
    client = sdk_client(asgi.port)
    yield client
    client._pusher_client.http.session.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def subscribed(session: FallbackSession, channel: str, auth: str | None = None) -> None:
    """Subscribe a polling session and collect the answers (success, then the count)."""
    await session.subscribe(channel, auth)
    messages = await session.poll_messages(ignore=frozenset())
    assert messages[0]["event"] == "pusher_internal:subscription_succeeded", messages
    if len(messages) == 1 and not channel.startswith("private-"):
        messages += await session.poll_messages(ignore=frozenset())
    if not channel.startswith("private-"):
        assert messages[-1]["event"] == SUBSCRIPTION_COUNT, messages


# --- REST through the pusher SDK --------------------------------------------------------


async def events_but_counts(stream: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages of a stream, leaving out subscription_count events (sent
    about 50 ms after a subscribe, so they can land between any two others)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        found += [m for m in await stream.messages() if m["event"] != SUBSCRIPTION_COUNT]
    return found


async def test_sdk_trigger_reaches_a_streaming_session(
    http: aiohttp.ClientSession, asgi: AsgiServer, rest: pusher.Pusher
) -> None:
    channel = unique("news")
    session = FallbackSession(http, asgi.http_url)
    async with session.stream() as stream:
        assert stream.response.headers["Content-Type"].startswith("application/javascript")
        await session.open_stream(stream)
        await session.subscribe(channel)
        [succeeded] = await events_but_counts(stream, 1)
        assert succeeded["event"] == "pusher_internal:subscription_succeeded"

        answer = rest.trigger(channel, "created", {"id": 42})
        assert answer == {}
        messages = await events_but_counts(stream, 1)
        assert messages == [{"event": "created", "channel": channel, "data": '{"id": 42}'}]

        rest.trigger_batch(
            [
                {"channel": channel, "name": "first", "data": "1"},
                {"channel": channel, "name": "second", "data": "2"},
            ]
        )
        received = [m["event"] for m in await events_but_counts(stream, 2)]
        assert received == ["first", "second"]


async def test_sdk_queries_channels_channel_and_users(
    http: aiohttp.ClientSession, asgi: AsgiServer, rest: pusher.Pusher
) -> None:
    public = unique("lobby")
    presence = unique("presence-room")
    session = FallbackSession(http, asgi.http_url)
    await session.open_polling()
    await subscribed(session, public)
    member = json.dumps({"user_id": "u1", "user_info": {"name": "Ann"}})
    await session.send(
        {
            "event": "pusher:subscribe",
            "data": {
                "channel": presence,
                "auth": channel_auth(session.socket_id, presence, member),
                "channel_data": member,
            },
        }
    )
    assert (await session.poll_messages())[0]["event"] == "pusher_internal:subscription_succeeded"

    listed = rest.channels_info(attributes=["subscription_count"])["channels"]
    assert listed[public] == {"subscription_count": 1}
    assert presence in listed
    presence_only = rest.channels_info(prefix_filter="presence-", attributes=["user_count"])
    assert presence_only["channels"] == {presence: {"user_count": 1}}
    assert rest.channel_info(public, ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 1,
    }
    assert rest.channel_info(unique("empty")) == {"occupied": False}
    assert rest.users_info(presence) == {"users": [{"id": "u1"}]}


def test_a_bad_signature_is_401_json(asgi: AsgiServer) -> None:
    wrong = sdk_client(asgi.port, secret="not-the-secret")
    with pytest.raises(pusher.errors.PusherBadAuth):
        wrong.trigger(unique("news"), "e", "d")
    reply = rest_request(
        asgi.http_url, "POST", f"/apps/{APP_ID}/events", json_body={}, secret="wrong"
    )
    assert_error_response(reply, 401)
    assert "signature" in reply.json()["error"]


def test_a_body_over_max_request_body_is_413_json(asgi: AsgiServer) -> None:
    payload = {"name": "e", "channel": "big", "data": "x" * MAX_REQUEST_BODY}
    reply = rest_request(asgi.http_url, "POST", f"/apps/{APP_ID}/events", json_body=payload)
    assert_error_response(reply, 413)
    assert str(MAX_REQUEST_BODY) in reply.json()["error"]


def test_unknown_app_wrong_method_and_trigger_errors_are_json(asgi: AsgiServer) -> None:
    path = f"/apps/{APP_ID}/events"
    assert_error_response(rest_request(asgi.http_url, "POST", "/apps/999/events"), 401)
    assert_error_response(rest_request(asgi.http_url, "GET", path), 405)
    bad = rest_request(asgi.http_url, "POST", path, json_body={"name": "e", "channels": []})
    assert_error_response(bad, 400)


def test_rest_requests_are_timed_by_app_endpoint_and_status(
    asgi: AsgiServer, rest: pusher.Pusher
) -> None:
    name = "tidings_rest_request_seconds_count"
    endpoint = "/apps/{app_id}/events"
    _, before = scrape(asgi.http_url)
    rest.trigger(unique("timed"), "e", "d")
    rest_request(asgi.http_url, "POST", f"/apps/{APP_ID}/events", json_body={}, secret="wrong")
    _, after = scrape(asgi.http_url)
    for status in ("200", "401"):
        labels = {"app": APP_ID, "endpoint": endpoint, "status": status}
        assert value(after, name, **labels) == value(before, name, **labels) + 1


def test_rest_requests_are_traced_with_debug(make_asgi: Callable[..., AsgiServer]) -> None:
    server = make_asgi(debug=True)
    rest_request(server.http_url, "POST", f"/apps/{APP_ID}/events", json_body={}, secret="x")
    rest_request(server.http_url, "GET", f"/apps/{APP_ID}/channels")
    server.stop()  # the log is complete
    text = server.logs()
    # A 401 names the string to sign, as under aiohttp.
    failed = f'REST POST /apps/{APP_ID}/events from 127.0.0.1: 401 {{"error":"Invalid signature'
    assert failed in text, text
    assert f"REST GET /apps/{APP_ID}/channels from 127.0.0.1: 200 \n" in text, text


# --- the HTTP fallbacks -------------------------------------------------------------------


async def test_polling_session_subscribes_receives_and_sends_client_events(
    http: aiohttp.ClientSession, asgi: AsgiServer, rest: pusher.Pusher
) -> None:
    channel = unique("private-chat")
    sender = FallbackSession(http, asgi.http_url)
    listener = FallbackSession(http, asgi.http_url)
    for session in (sender, listener):
        await session.open_polling()
        await subscribed(session, channel, channel_auth(session.socket_id, channel))

    rest.trigger(channel, "from-server", {"n": 1})
    for session in (sender, listener):
        assert await session.poll_messages() == [
            {"event": "from-server", "channel": channel, "data": '{"n": 1}'}
        ]

    await sender.send({"event": "client-typing", "channel": channel, "data": {"who": "ann"}})
    # Pusher: a client event reaches the other subscribers, never its sender.
    assert await listener.poll_messages() == [
        {"event": "client-typing", "channel": channel, "data": '{"who":"ann"}'}
    ]
    rest.trigger(channel, "after", "x")
    assert [m["event"] for m in await sender.poll_messages()] == ["after"]


async def test_xhr_send_over_its_limit_is_413_and_bad_names_400(
    http: aiohttp.ClientSession, asgi: AsgiServer
) -> None:
    session = FallbackSession(http, asgi.http_url)
    await session.open_polling()
    huge = json.dumps(["x" * 4 * MAX_MESSAGE_BYTES]).encode()
    assert_json_error(await session.send_raw(huge), 413)
    assert_json_error(await session.send_raw(b"not json"), 400)
    bad = FallbackSession(http, asgi.http_url, path="1/has.dots")
    assert_json_error(await bad.poll(), 400)


async def test_preflight_answers_cors(http: aiohttp.ClientSession, asgi: AsgiServer) -> None:
    session = FallbackSession(http, asgi.http_url)
    origin = "http://page.example"
    async with http.options(session.url("xhr_streaming"), headers={"Origin": origin}) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


async def test_a_streaming_client_that_goes_away_frees_its_session(
    http: aiohttp.ClientSession, make_asgi: Callable[..., AsgiServer]
) -> None:
    server = make_asgi(http_session_timeout=1)
    rest = sdk_client(server.port)
    channel = unique("public")
    session = FallbackSession(http, server.http_url)
    async with session.stream() as stream:
        await session.open_stream(stream)
        await session.subscribe(channel)
        messages = await stream.messages()
        assert messages[0]["event"] == "pusher_internal:subscription_succeeded"
        assert rest.channel_info(channel)["occupied"] is True
        stream.response.close()  # the client aborts: only http.disconnect tells the server

    async with asyncio.timeout(4 * TIMEOUT):
        while (await session.send_raw(b"[]")).status != 404:
            await asyncio.sleep(0.1)
    assert rest.channel_info(channel)["occupied"] is False


# --- mounted under a path -----------------------------------------------------------------


async def test_mounted_in_starlette_under_a_path(
    http: aiohttp.ClientSession, make_asgi: Callable[..., AsgiServer]
) -> None:
    """``Mount("/rt", ...)``: the fallback lives under /rt/pusher, and REST accepts a request
    signed over the whole path (a client that knows the mount point) as well as one signed
    over the path below it (one behind a proxy that strips the prefix)."""
    server = make_asgi(factory="create_mounted_app")
    mounted = f"{server.http_url}/rt"
    channel = unique("mounted")
    session = FallbackSession(http, mounted)
    async with session.stream() as stream:
        await session.open_stream(stream)
        await session.subscribe(channel)
        messages = await stream.messages()
        assert messages[0]["event"] == "pusher_internal:subscription_succeeded"

        event = {"name": "whole", "channel": channel, "data": "1"}
        path = f"/rt/apps/{APP_ID}/events"
        reply = rest_request(server.http_url, "POST", path, json_body=event)
        assert (reply.status, reply.json()) == (200, {})
        assert [m["event"] for m in await stream.messages()] == ["whole"]

        # Signed over /apps/...: what a client sees behind a proxy that strips /rt.
        event = {"name": "below", "channel": channel, "data": "2"}
        timestamp = int(time.time())
        params = {
            "auth_key": APP_KEY,
            "auth_timestamp": str(timestamp),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(json.dumps(event).encode()).hexdigest(),
        }
        below = f"/apps/{APP_ID}/events"
        signature = hmac_hex(APP_SECRET, f"POST\n{below}\n{query_string(params)}")
        reply = rest_request(
            server.http_url, "POST", path, json_body=event, timestamp=timestamp, signature=signature
        )
        assert (reply.status, reply.json()) == (200, {})
        assert [m["event"] for m in await stream.messages()] == ["below"]

    assert_error_response(rest_request(server.http_url, "GET", f"/rt/apps/{APP_ID}/events"), 405)
