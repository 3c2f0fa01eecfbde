"""The HTTP fallbacks over raw HTTP: the exact frames pusher-js's xhr_streaming and
xhr_polling transports read (pusher-js ``core/http/http_socket.ts``; reference section 2.3).

A session is ``/pusher/app/{key}/{server}/{session}``; receive requests are
``.../xhr_streaming`` (one long chunked response) or ``.../xhr`` (long polls), sends are
``.../xhr_send`` with a JSON array of strings. Every frame is one line: ``o``, ``h``,
``a[...]`` (Pusher messages as JSON strings) or ``c[code,"reason"]``.

Servers with short timers (``activity_timeout=1`` gives a 1 s streaming heartbeat,
``http_session_timeout=1`` a 1 s poll and session expiry) are started per test; the rest share
the module server, whose long polls wait 25 s, so those tests only poll when something is
queued.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pusher
import pytest
from fallback_helpers import (
    PING,
    PRELUDE,
    SUBSCRIPTION_COUNT,
    FallbackSession,
    Reply,
    assert_json_error,
    established_socket_id,
    parse_body,
    parse_frame,
)
from pusher_helpers import (
    QUERY,
    QUIET,
    TIMEOUT,
    channel_auth,
    sdk_client,
    unique,
    user_auth,
)

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
DISABLED_KEY = "disabled-key"

ServerFactory = Callable[..., Any]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def rest(server: Any) -> pusher.Pusher:
    return sdk_client(server.port)


async def subscribed_polling(
    http: aiohttp.ClientSession, server: Any, channel: str
) -> FallbackSession:
    """A polling session subscribed to a public channel with nothing left queued.

    The default app has subscription_count on, so the count (1) arrives in its own poll.
    """
    session = FallbackSession(http, server.http_url)
    await session.open_polling()
    await session.subscribe(channel)
    messages = await session.poll_messages(ignore=frozenset())
    assert messages[0] == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": "{}",
    }
    if len(messages) == 1:
        messages += await session.poll_messages(ignore=frozenset())
    assert messages[1:] == [
        {"event": SUBSCRIPTION_COUNT, "channel": channel, "data": '{"subscription_count":1}'}
    ]
    return session


# --- opening a session -----------------------------------------------------------------


async def test_streaming_opens_with_prelude_o_and_connection_established(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    async with session.stream() as stream:
        assert stream.response.headers["Content-Type"].startswith("application/javascript")
        assert stream.response.headers.get("Transfer-Encoding") == "chunked"
        assert await stream.line() == PRELUDE
        assert await stream.line() == b"o\n"
        line = await stream.line()
        assert line.startswith(b'a["{\\"event\\":\\"pusher:connection_established\\"')
        kind, messages = parse_frame(line)
        assert kind == "a" and len(messages) == 1
        socket_id = established_socket_id(messages[0])
        assert json.loads(messages[0]["data"]) == {"socket_id": socket_id, "activity_timeout": 120}


async def test_streaming_heartbeat_after_min_25_s_and_activity_timeout(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(activity_timeout=1)
    session = FallbackSession(http, srv.http_url)
    async with session.stream() as stream:
        await session.open_stream(stream)
        started = time.monotonic()
        # activity_timeout=1 also makes the server ping the idle session (pusher:ping in an
        # a[...] frame); the heartbeat is the bare "h" line.
        while True:
            kind, value = await stream.frame(timeout=2 * TIMEOUT)
            if kind == "h":
                break
            assert (kind, value) == ("a", [PING]), (kind, value)
        assert time.monotonic() - started < 1 + TIMEOUT / 2
        assert (await stream.frame(timeout=2 * TIMEOUT))[0] in ("h", "a")


async def test_first_poll_answers_only_o_and_the_second_connection_established(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    first = await session.poll()
    assert first.status == 200
    assert first.body == b"o\n"
    assert first.headers["Content-Type"].startswith("application/javascript")
    second = await session.poll()
    assert second.status == 200
    frames = parse_body(second.body)
    assert len(frames) == 1 and frames[0][0] == "a", frames
    [established] = frames[0][1]
    socket_id = established_socket_id(established)
    assert json.loads(established["data"]) == {"socket_id": socket_id, "activity_timeout": 120}


async def test_a_quiet_poll_answers_h(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    # The long poll answers "h" after min(25 s, a server timer); activity_timeout=1 keeps
    # that short here and also makes the server ping the idle session (a[pusher:ping]).
    srv = make_server(activity_timeout=1)
    session = FallbackSession(http, srv.http_url)
    await session.open_polling()
    started = time.monotonic()
    while True:
        frames = await session.poll_frames(timeout=2 * TIMEOUT)
        if frames == [("h", None)]:
            break
        assert frames == [("a", [PING])], frames
        assert time.monotonic() - started < TIMEOUT
    assert time.monotonic() - started < TIMEOUT


async def test_two_sessions_get_different_socket_ids(
    http: aiohttp.ClientSession, server: Any
) -> None:
    a = FallbackSession(http, server.http_url)
    b = FallbackSession(http, server.http_url)
    assert await a.open_polling() != await b.open_polling()


# --- xhr_send --------------------------------------------------------------------------


async def test_xhr_send_empty_array_is_204_with_cors(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url, origin="https://app.example")
    await session.open_polling()
    reply = await session.send_raw(b"[]")
    assert reply.status == 204
    assert reply.body == b""
    assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_xhr_send_empty_array_counts_as_activity(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    """An idle session gets pusher:ping after activity_timeout; one sending ``[]`` does not."""
    srv = make_server(activity_timeout=1)
    idle = FallbackSession(http, srv.http_url)
    busy = FallbackSession(http, srv.http_url)
    async with idle.stream() as idle_stream, busy.stream() as busy_stream:
        await idle.open_stream(idle_stream)
        await busy.open_stream(busy_stream)

        async def keep_pinging() -> None:
            while True:
                await busy.send_raw(b"[]")
                await asyncio.sleep(0.2)

        pinger = asyncio.create_task(keep_pinging())
        try:
            # The idle one is pinged within about a second...
            assert await idle_stream.messages(timeout=2 * TIMEOUT) == [PING]
            # ...while the busy one only ever gets heartbeats for the same span and more.
            deadline = time.monotonic() + 2.0
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = await busy_stream.frame(timeout=left)
                except TimeoutError:
                    break
                assert frame == ("h", None), frame
        finally:
            pinger.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pinger


async def test_pusher_ping_through_xhr_send_answers_pong(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    await session.open_polling()
    await session.send({"event": "pusher:ping", "data": {}})
    assert await session.poll_messages() == [{"event": "pusher:pong", "data": "{}"}]


async def test_subscribe_by_xhr_send_then_poll_gets_subscription_succeeded(
    http: aiohttp.ClientSession, server: Any
) -> None:
    channel = unique("public")
    private = unique("private")
    session = await subscribed_polling(http, server, channel)
    await session.subscribe(private, channel_auth(session.socket_id, private))
    assert (await session.poll_messages())[0] == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": private,
        "data": "{}",
    }


async def test_several_messages_in_one_xhr_send_are_handled_in_order(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    await session.open_polling()
    bad = unique("private")
    await session.send(
        {"event": "pusher:subscribe", "data": {"channel": bad, "auth": "app-key:nope"}},
        {"event": "pusher:ping", "data": {}},
    )
    messages = await session.poll_messages()
    assert [m["event"] for m in messages] == ["pusher:subscription_error", "pusher:pong"]
    assert messages[0]["data"]["type"] == "AuthError"
    assert messages[0]["data"]["status"] == 401


async def test_events_queued_between_polls_come_in_order_in_one_frame(
    http: aiohttp.ClientSession, server: Any, rest: pusher.Pusher
) -> None:
    channel = unique("public")
    session = await subscribed_polling(http, server, channel)
    for i in range(20):
        rest.trigger(channel, f"event-{i}", {"n": i, "text": "héllo ✓"})
    frames = await session.poll_frames()
    assert len(frames) == 1, frames
    kind, messages = frames[0]
    assert kind == "a"
    assert [(m["event"], m["channel"]) for m in messages] == [
        (f"event-{i}", channel) for i in range(20)
    ]
    assert [json.loads(m["data"]) for m in messages] == [
        {"n": i, "text": "héllo ✓"} for i in range(20)
    ]


async def test_streaming_delivers_events_in_order(
    http: aiohttp.ClientSession, server: Any, rest: pusher.Pusher
) -> None:
    channel = unique("public")
    session = FallbackSession(http, server.http_url)
    async with session.stream() as stream:
        await session.open_stream(stream)
        await session.subscribe(channel)
        got: list[dict[str, Any]] = []
        while not any(m["event"] == "pusher_internal:subscription_succeeded" for m in got):
            got += await stream.messages()
        for i in range(10):
            rest.trigger(channel, "tick", {"n": i})
        ticks: list[int] = []
        while len(ticks) < 10:
            for m in await stream.messages():
                if m["event"] == "tick":
                    assert m["channel"] == channel
                    ticks.append(json.loads(m["data"])["n"])
        assert ticks == list(range(10))


async def test_xhr_send_to_an_unknown_session_is_404_json(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    assert_json_error(await session.send_raw(b"[]"), 404)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"event":"pusher:ping"}', b"[1, 2]", b'[{"event":"pusher:ping"}]', b""],
)
async def test_malformed_xhr_send_is_400_json_and_the_session_lives_on(
    http: aiohttp.ClientSession, server: Any, body: bytes
) -> None:
    session = FallbackSession(http, server.http_url)
    await session.open_polling()
    assert_json_error(await session.send_raw(body), 400)
    await session.send({"event": "pusher:ping", "data": {}})
    assert await session.poll_messages() == [{"event": "pusher:pong", "data": "{}"}]


# --- refusals --------------------------------------------------------------------------


REFUSALS = [
    pytest.param("no-such-key", QUERY, 4001, id="unknown-key"),
    pytest.param(DISABLED_KEY, QUERY, 4003, id="disabled-app"),
    pytest.param(APP_KEY, "client=js&version=8.6.0", 4008, id="missing-protocol"),
    pytest.param(APP_KEY, "protocol=abc&client=js", 4006, id="bad-protocol"),
    pytest.param(APP_KEY, "protocol=4&client=js", 4007, id="unsupported-protocol"),
]


@pytest.mark.parametrize(("key", "query", "code"), REFUSALS)
async def test_refused_streaming_session_gets_o_then_c(
    http: aiohttp.ClientSession, server: Any, key: str, query: str, code: int
) -> None:
    session = FallbackSession(http, server.http_url, key=key, query=query)
    async with session.stream() as stream:
        assert await stream.line() == PRELUDE
        assert await stream.frame() == ("o", None)
        kind, (got_code, reason) = await stream.frame()
        assert (kind, got_code) == ("c", code)
        assert reason
        assert await stream.ended()
    assert_json_error(await session.send_raw(b"[]"), 404)  # nothing was kept


@pytest.mark.parametrize(("key", "query", "code"), REFUSALS)
async def test_refused_polling_session_gets_o_then_c(
    http: aiohttp.ClientSession, server: Any, key: str, query: str, code: int
) -> None:
    session = FallbackSession(http, server.http_url, key=key, query=query)
    frames = await session.poll_frames()
    assert len(frames) == 2, frames
    assert frames[0] == ("o", None)
    assert frames[1][0] == "c" and frames[1][1][0] == code
    assert frames[1][1][1]


# --- CORS ------------------------------------------------------------------------------


async def preflight(http: aiohttp.ClientSession, url: str, origin: str | None) -> Reply:
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    if origin is not None:
        headers["Origin"] = origin
    async with asyncio.timeout(TIMEOUT):
        async with http.options(url, headers=headers) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.read())


@pytest.mark.parametrize("kind", ["xhr_streaming", "xhr", "xhr_send"])
async def test_preflight_allows_the_origin(
    http: aiohttp.ClientSession, server: Any, kind: str
) -> None:
    session = FallbackSession(http, server.http_url)
    reply = await preflight(http, session.url(kind), "https://app.example")
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert reply.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert reply.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"


async def test_preflight_without_origin_allows_any(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url)
    reply = await preflight(http, session.url("xhr_streaming"), None)
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.headers["Access-Control-Allow-Headers"] == "Content-Type"


async def test_receive_responses_carry_cors_headers(
    http: aiohttp.ClientSession, server: Any
) -> None:
    session = FallbackSession(http, server.http_url, origin="https://app.example")
    reply = await session.poll()
    assert reply.body == b"o\n"
    assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example"


GUARDED_APPS = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "allowed_origins": ["https://good.example"],
    }
]


async def test_allowed_origins(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    srv = make_server(apps=GUARDED_APPS)
    good = FallbackSession(http, srv.http_url, origin="https://good.example")
    bad = FallbackSession(http, srv.http_url, origin="https://evil.example")

    reply = await preflight(http, good.url("xhr_send"), "https://good.example")
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert reply.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert reply.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"

    reply = await preflight(http, bad.url("xhr_send"), "https://evil.example")
    assert reply.status == 204
    for header in reply.headers:
        assert not header.lower().startswith("access-control-"), reply.headers

    # A good origin opens a session; a bad one is refused like an unknown key is.
    await good.open_polling()
    async with bad.stream() as stream:
        assert await stream.line() == PRELUDE
        assert await stream.frame() == ("o", None)
        kind, (code, reason) = await stream.frame()
        assert kind == "c" and code == 4009 and reason
        assert await stream.ended()
        assert "Access-Control-Allow-Origin" not in stream.response.headers


# --- session end -----------------------------------------------------------------------


async def test_session_expires_without_a_receive_request(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(http_session_timeout=1)
    rest = sdk_client(srv.port)
    channel = unique("public")
    session = FallbackSession(http, srv.http_url)
    await session.open_polling()
    await session.subscribe(channel)
    assert (await session.poll_messages())[0]["event"] == "pusher_internal:subscription_succeeded"
    assert rest.channel_info(channel)["occupied"] is True
    left_at = time.monotonic()

    async def gone() -> None:
        while (await session.send_raw(b"[]")).status != 404:
            await asyncio.sleep(0.1)

    async with asyncio.timeout(2 * TIMEOUT):
        await gone()
    assert time.monotonic() - left_at >= 1.0
    assert_json_error(await session.send_raw(b"[]"), 404)
    assert rest.channel_info(channel)["occupied"] is False
    # The same session path now opens a brand-new session.
    assert await session.poll_frames() == [("o", None)]


async def test_a_session_with_a_receive_attached_does_not_expire(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(http_session_timeout=1, activity_timeout=1)
    session = FallbackSession(http, srv.http_url)
    async with session.stream() as stream:
        await session.open_stream(stream)
        await asyncio.sleep(2.0)  # twice the timeout
        reply = await session.send_raw(b"[]")
        assert reply.status == 204, reply.body


async def test_slow_http_consumer_is_closed_with_4100(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(max_write_buffer=4096)
    rest = sdk_client(srv.port)
    channel = unique("public")
    session = FallbackSession(http, srv.http_url)
    await session.open_polling()
    await session.subscribe(channel)
    assert (await session.poll_messages())[0]["event"] == "pusher_internal:subscription_succeeded"
    for i in range(20):  # ~20 x 500 bytes queued, no poll: past the 4096-byte bound
        rest.trigger(channel, "bulk", {"n": i, "pad": "x" * 400})
    frames = await session.poll_frames()
    assert frames[-1] == ("c", [4100, "Slow consumer"]), frames
    assert all(kind == "a" for kind, _ in frames[:-1]), frames
    assert_json_error(await session.send_raw(b"[]"), 404)

    async def unoccupied() -> bool:
        return rest.channel_info(channel)["occupied"] is False

    async with asyncio.timeout(TIMEOUT):
        while not await unoccupied():
            await asyncio.sleep(0.05)


async def test_terminate_user_connections_closes_the_http_session_with_4009(
    http: aiohttp.ClientSession, server: Any, rest: pusher.Pusher
) -> None:
    user_id = unique("user")
    session = FallbackSession(http, server.http_url)
    other = FallbackSession(http, server.http_url)
    await session.open_polling()
    await other.open_polling()
    user_data = json.dumps({"id": user_id})
    await session.send(
        {
            "event": "pusher:signin",
            "data": {"auth": user_auth(session.socket_id, user_data), "user_data": user_data},
        }
    )
    [success] = await session.poll_messages()
    assert success["event"] == "pusher:signin_success"
    assert json.loads(success["data"]) == {"user_data": user_data}
    rest.terminate_user_connections(user_id)
    frames = await session.poll_frames()
    assert frames[-1][0] == "c" and frames[-1][1][0] == 4009, frames
    assert len(frames) == 2, frames
    kind, messages = frames[0]
    assert kind == "a"
    assert [(m["event"], m["data"]["code"]) for m in messages] == [("pusher:error", 4009)]
    assert_json_error(await session.send_raw(b"[]"), 404)
    # Another session is untouched.
    await other.send({"event": "pusher:ping", "data": {}})
    assert await other.poll_messages() == [{"event": "pusher:pong", "data": "{}"}]


async def test_sigterm_closes_streaming_sessions_with_4200(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server()
    session = FallbackSession(http, srv.http_url)
    async with session.stream() as stream:
        await session.open_stream(stream)
        srv.proc.send_signal(signal.SIGTERM)
        while True:
            kind, value = await stream.frame(timeout=2 * TIMEOUT)
            if kind != "h":
                break
        assert kind == "c", (kind, value)
        assert value[0] == 4200 and value[1]
        assert await stream.ended()
    assert srv.proc.wait(timeout=3 * TIMEOUT) == 0


async def test_sigterm_between_two_polls_hands_the_4200_to_the_next_poll(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    # A polling client has no request open for a moment after each answer. A drain in that
    # moment queues the 4200; the next poll, on the keep-alive connection, must collect it
    # instead of finding the connection reset (pusher-js: 1006, not "reconnect now").
    srv = make_server()
    session = FallbackSession(http, srv.http_url)
    await session.open_polling()  # answered: no request open now, the connection kept alive
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2 * TIMEOUT
    while "draining" not in srv.logs():
        assert time.monotonic() < deadline, srv.logs()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the drain has queued the close frame by now
    frames = await session.poll_frames()
    assert frames[-1][0] == "c" and frames[-1][1][0] == 4200, frames
    assert srv.proc.wait(timeout=3 * TIMEOUT) == 0


async def test_a_poll_with_nothing_queued_keeps_waiting(
    http: aiohttp.ClientSession, server: Any
) -> None:
    """A poll with nothing queued keeps waiting (no empty ``a[]`` answer)."""
    session = FallbackSession(http, server.http_url)
    await session.open_polling()
    with pytest.raises(TimeoutError):
        await session.poll(timeout=QUIET)


async def test_a_batch_over_two_channels_arrives_as_separate_messages_in_order(
    http: aiohttp.ClientSession, server: Any, rest: pusher.Pusher
) -> None:
    """The fan-out joins one tick's frames into one buffer; the HTTP session must split
    them back into messages."""
    x = unique("public")
    session = await subscribed_polling(http, server, x)
    events = [{"channel": x, "name": f"e{i}", "data": json.dumps({"n": i})} for i in range(6)]
    rest.trigger_batch(events)
    rest.trigger_batch(events[:2])
    messages = await session.poll_messages()
    assert [(m["event"], json.loads(m["data"])["n"]) for m in messages] == [
        (f"e{i}", i) for i in [*range(6), 0, 1]
    ]
