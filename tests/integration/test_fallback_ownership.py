"""HTTP fallback sessions belong to the client that opened them (issue #11, item 5).

A session's name (``{server}/{session}`` in the URL) is chosen by the client and is its only
credential. Against a real server: a second receive request on a live session is answered
``c[2010,"Another connection still open"]`` and gets none of the owner's messages; requests
with another ``Origin`` than the opener's are refused (403 JSON); a flood of sessions opened
and never received from takes no connection quota and is forgotten within seconds; names
pusher-js could not have made are refused (400 JSON); no response allows credentials.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from fallback_helpers import (
    PING,
    PRELUDE,
    SUBSCRIPTION_COUNT,
    FallbackSession,
    Frame,
    Reply,
    Stream,
    assert_json_error,
    parse_body,
)
from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUIET,
    TIMEOUT,
    SocketOpener,
    eventually,
    raw_http,
    sdk_client,
    unique,
)
from websockets.exceptions import ConnectionClosed

ServerFactory = Callable[..., Any]

ANOTHER_RECEIVER: Frame = ("c", [2010, "Another connection still open"])
# A second receive request may wait this long (server TAKEOVER_WAIT, 3 s) before its refusal.
REFUSAL_WAIT = 3.0 + 2 * TIMEOUT
PONG = {"event": "pusher:pong", "data": "{}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def app(**limits: Any) -> dict[str, Any]:
    return {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, **limits}


def connections_gauge(http_url: str) -> float:
    """This node's ``tidings_connections`` of the app, from ``/metrics``."""
    resp = raw_http(http_url, "GET", "/metrics")
    assert resp.status == 200, resp
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            if sample.name == "tidings_connections" and sample.labels.get("app") == APP_ID:
                return float(sample.value)
    raise AssertionError("no tidings_connections sample for the app")


async def refused_receive(intruder: FallbackSession, kind: str) -> list[Frame]:
    """The frames of one whole receive request (``xhr`` or ``xhr_streaming``)."""
    headers = intruder.headers
    async with asyncio.timeout(REFUSAL_WAIT):
        async with intruder.http.post(intruder.url(kind), data=b"", headers=headers) as resp:
            assert resp.status == 200, resp.status
            body = await resp.read()
    if kind == "xhr_streaming":
        assert body.startswith(PRELUDE), body[:100]
        body = body[len(PRELUDE) :]
    return parse_body(body)


async def ticks(stream: Stream, count: int) -> list[int]:
    """The ``n`` of the next ``count`` tick events on ``stream`` (nothing else expected)."""
    seen: list[int] = []
    while len(seen) < count:
        for message in await stream.messages():
            if message["event"] == SUBSCRIPTION_COUNT:
                continue
            assert message["event"] == "tick", message
            seen.append(json.loads(message["data"])["n"])
    return seen


async def streaming_subscriber(session: FallbackSession, stream: Stream, channel: str) -> None:
    await session.open_stream(stream)
    await session.subscribe(channel)
    [succeeded, *_] = await stream.messages()
    assert succeeded["event"] == "pusher_internal:subscription_succeeded", succeeded


# --- one receiver at a time --------------------------------------------------------------


async def test_a_second_receiver_is_refused_and_gets_none_of_the_owners_messages(
    http: aiohttp.ClientSession, server: Any
) -> None:
    rest = sdk_client(server.port)
    channel = unique("public")
    owner = FallbackSession(http, server.http_url)
    intruder = FallbackSession(http, server.http_url, path=owner.path)
    async with owner.stream() as stream:
        await streaming_subscriber(owner, stream, channel)

        async def publish() -> None:
            for n in range(10):
                await asyncio.to_thread(rest.trigger, channel, "tick", {"n": n})

        kinds = ["xhr", "xhr_streaming"] * 4
        refusals, _ = await asyncio.gather(
            asyncio.gather(*(refused_receive(intruder, kind) for kind in kinds)), publish()
        )
        assert refusals == [[ANOTHER_RECEIVER]] * len(kinds)
        assert await ticks(stream, 10) == list(range(10))
        # And after: the owner's stream still carries everything, in order.
        for n in range(10, 15):
            rest.trigger(channel, "tick", {"n": n})
        assert await ticks(stream, 5) == list(range(10, 15))


async def test_a_second_poll_is_refused_while_the_owners_poll_waits(
    http: aiohttp.ClientSession, server: Any
) -> None:
    owner = FallbackSession(http, server.http_url)
    intruder = FallbackSession(http, server.http_url, path=owner.path)
    await owner.open_polling()
    waiting = asyncio.create_task(owner.poll_messages())
    await asyncio.sleep(QUIET)  # the owner's long poll is attached (nothing is queued)
    assert await refused_receive(intruder, "xhr") == [ANOTHER_RECEIVER]
    await owner.send(PING)
    assert await waiting == [PONG]


async def test_a_stream_reopened_by_its_client_takes_over_at_once(
    http: aiohttp.ClientSession, server: Any
) -> None:
    """pusher-js aborts its stream and opens another on the same session after 256 KiB
    (``buffer_too_long``): the new one must not be refused as a second receiver."""
    rest = sdk_client(server.port)
    channel = unique("public")
    owner = FallbackSession(http, server.http_url)
    async with owner.stream() as stream:
        await streaming_subscriber(owner, stream, channel)
        stream.response.close()  # the client aborts: its connection closes
    async with owner.stream() as stream:
        assert await stream.line() == PRELUDE
        rest.trigger(channel, "tick", {"n": 1})
        assert await ticks(stream, 1) == [1]


async def test_past_256_kib_a_stream_holds_the_queue_for_the_clients_next_stream(
    http: aiohttp.ClientSession, server: Any
) -> None:
    """pusher-js aborts its stream once it has read more than 256 Ki characters (it checks
    after each complete frame) and opens the next one: whatever the server wrote to the
    old one after that point would be lost, so it waits for the next stream."""
    rest = sdk_client(server.port)
    channel = unique("public")
    owner = FallbackSession(http, server.http_url)
    pad = "x" * 9000  # ASCII: characters and bytes are the same count
    async with owner.stream() as stream:
        await streaming_subscriber(owner, stream, channel)
        read = len(PRELUDE) + len(b"o\n")
        n = 0
        while read <= 256 * 1024:
            rest.trigger(channel, "big", {"n": n, "pad": pad})
            n += 1
            while True:  # frames up to this event's
                line = await stream.line()
                read += len(line)
                if b'"big' in line:
                    break
        read_so_far = read
        rest.trigger(channel, "tick", {"n": n})
        with pytest.raises(TimeoutError):  # held for the next stream, not written here
            await stream.line(timeout=QUIET)
        assert read_so_far > 256 * 1024
        stream.response.close()
    async with owner.stream() as stream:
        assert await stream.line() == PRELUDE
        assert await ticks(stream, 1) == [n]


async def test_hundreds_of_concurrent_receivers_attach_one_and_count_one(
    make_server: ServerFactory,
) -> None:
    srv = make_server()
    rest = sdk_client(srv.port)
    channel = unique("public")
    crowd = 300
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        owner = FallbackSession(http, srv.http_url)
        intruder = FallbackSession(http, srv.http_url, path=owner.path)
        async with owner.stream() as stream:
            await streaming_subscriber(owner, stream, channel)
            kinds = ["xhr_streaming", "xhr"] * (crowd // 2)
            results = await asyncio.gather(
                *(refused_receive(intruder, k) for k in kinds), return_exceptions=True
            )
            attached = [r for r in results if r != [ANOTHER_RECEIVER]]
            assert not attached, f"{len(attached)} of {crowd} not refused: {attached[0]!r}"
            assert connections_gauge(srv.http_url) == 1
            rest.trigger(channel, "tick", {"n": 7})
            assert await ticks(stream, 1) == [7]


# --- Origin (and address) binding ---------------------------------------------------------

GOOD, OTHER, EVIL = "https://good.example", "https://other.example", "https://evil.example"


async def test_requests_from_another_origin_are_refused(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(apps=[app(allowed_origins=[GOOD, OTHER])])
    owner = FallbackSession(http, srv.http_url, origin=GOOD)
    await owner.open_polling()
    ping = json.dumps([json.dumps(PING)]).encode()
    for origin in (EVIL, OTHER, None):  # not allowed; allowed but not the opener's; none
        stranger = FallbackSession(http, srv.http_url, origin=origin, path=owner.path)
        reply = await stranger.send_raw(ping)
        assert_json_error(reply, 403)
        assert "Access-Control-Allow-Origin" not in reply.headers
        if origin != OTHER:  # the app refuses the origin itself, as at open
            frames = await stranger.poll_frames()
            assert frames[0] == ("o", None) and frames[1][0] == "c", frames
            assert frames[1][1][0] == 4009, frames
        else:
            assert_json_error(await stranger.poll(), 403)
    await owner.send(PING)
    assert await owner.poll_messages() == [PONG]  # one pong: no stranger's ping got through


async def test_a_session_opened_without_origin_refuses_one_with_it(
    http: aiohttp.ClientSession, server: Any
) -> None:
    owner = FallbackSession(http, server.http_url)
    await owner.open_polling()
    stranger = FallbackSession(http, server.http_url, origin=EVIL, path=owner.path)
    assert_json_error(await stranger.send_raw(json.dumps([json.dumps(PING)]).encode()), 403)
    assert_json_error(await stranger.poll(), 403)
    await owner.send(PING)
    assert await owner.poll_messages() == [PONG]


async def test_with_http_bind_ip_the_session_belongs_to_the_openers_address(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    """The opener connects from 127.0.0.1, the stranger from 127.0.0.2 (same loopback)."""
    srv = make_server(http_bind_ip=True)
    owner = FallbackSession(http, srv.http_url)
    await owner.open_polling()
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere:
        stranger = FallbackSession(elsewhere, srv.http_url, path=owner.path)
        assert_json_error(await stranger.send_raw(json.dumps([json.dumps(PING)]).encode()), 403)
        assert_json_error(await stranger.poll(), 403)
    await owner.send(PING)
    assert await owner.poll_messages() == [PONG]


# --- unconfirmed sessions -----------------------------------------------------------------


async def test_a_flood_of_unconfirmed_sessions_takes_no_quota_and_expires(
    make_server: ServerFactory, open_socket: SocketOpener
) -> None:
    srv = make_server(apps=[app(max_connections=2)], http_unconfirmed_timeout=1)
    flood = 2000
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        sessions = [FallbackSession(http, srv.http_url) for _ in range(flood)]
        in_flight = asyncio.Semaphore(64)

        async def open_only(session: FallbackSession) -> Reply:
            async with in_flight:
                return await session.poll()

        async with asyncio.timeout(20 * TIMEOUT):
            bodies = await asyncio.gather(*(open_only(s) for s in sessions))
        assert {(r.status, r.body) for r in bodies} == {(200, b"o\n")}

        # Two real connections fit in the quota of 2; a third does not.
        first = await open_socket(srv.ws_url)
        await open_socket(srv.ws_url)
        assert connections_gauge(srv.http_url) == 2
        third = await open_socket(srv.ws_url, handshake=False)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(third.ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004

        # An unconfirmed session is gone after http_unconfirmed_timeout: the same name
        # now opens a brand-new session ("o"), where a live one would have been confirmed
        # (connection_established).
        await first.close()

        async def one_left() -> bool:
            return connections_gauge(srv.http_url) == 1

        await eventually(one_left)
        await asyncio.sleep(1.0 + TIMEOUT / 2)
        assert await sessions[-1].poll_frames() == [("o", None)]


async def test_a_send_to_an_unconfirmed_session_is_404(
    http: aiohttp.ClientSession, server: Any
) -> None:
    """Nothing reaches the node before a receive request confirmed the session (pusher-js
    sends nothing before connection_established)."""
    session = FallbackSession(http, server.http_url)
    assert await session.poll_frames() == [("o", None)]
    subscribe = {"event": "pusher:subscribe", "data": {"channel": unique("public")}}
    assert_json_error(await session.send_raw(json.dumps([json.dumps(subscribe)]).encode()), 404)
    [established] = await session.poll_messages()
    assert established["event"] == "pusher:connection_established"


# --- session names ------------------------------------------------------------------------

IMPLAUSIBLE = [
    "0/0",
    "1/abcdefg",  # 7 characters
    "1/" + "a" * 33,
    "1234/abcdefgh",  # server id of 4 digits
    "x1/abcdefgh",
    "1/abcd-efgh",
    "1/abcd_efgh",
    "1/abcd%C3%A9fgh",  # a non-ASCII letter
    "%D9%A1/abcdefgh",  # an Arabic-Indic digit
]


@pytest.mark.parametrize("path", IMPLAUSIBLE)
@pytest.mark.parametrize("kind", ["xhr", "xhr_streaming", "xhr_send"])
async def test_implausible_session_names_are_400_json(
    http: aiohttp.ClientSession, server: Any, path: str, kind: str
) -> None:
    session = FallbackSession(http, server.http_url, path=path)
    if kind == "xhr_send":
        reply = await session.send_raw(b"[]")
    else:
        async with asyncio.timeout(TIMEOUT):
            async with http.post(session.url(kind), data=b"", headers=session.headers) as r:
                reply_status, body = r.status, await r.read()
        assert reply_status == 400, (reply_status, body[:200])
        assert json.loads(body)["error"]
        return
    assert_json_error(reply, 400)


async def test_the_longest_plausible_names_work(http: aiohttp.ClientSession, server: Any) -> None:
    session = FallbackSession(http, server.http_url, path="999/" + "Zz09" * 8)
    await session.open_polling()


# --- CORS ---------------------------------------------------------------------------------


async def test_no_fallback_response_allows_credentials(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    srv = make_server(apps=[app(allowed_origins=[GOOD])])
    headers_seen: list[dict[str, str]] = []
    good = FallbackSession(http, srv.http_url, origin=GOOD)
    for kind in ("xhr", "xhr_streaming", "xhr_send"):
        for origin in (GOOD, EVIL, None):
            preflight = {"Access-Control-Request-Method": "POST"}
            if origin is not None:
                preflight["Origin"] = origin
            async with http.options(good.url(kind), headers=preflight) as resp:
                assert resp.status == 204
                headers_seen.append(dict(resp.headers))
    first = await good.poll()
    assert first.body == b"o\n"
    second = await good.poll()
    headers_seen += [first.headers, second.headers]
    assert second.headers["Access-Control-Allow-Origin"] == GOOD
    async with good.stream() as stream:
        headers_seen.append(dict(stream.response.headers))
    send = await good.send_raw(b"[]")
    assert send.status == 204 and send.headers["Access-Control-Allow-Origin"] == GOOD
    headers_seen.append(send.headers)
    headers_seen.append((await good.send_raw(b"{")).headers)
    evil = FallbackSession(http, srv.http_url, origin=EVIL)
    headers_seen.append((await evil.poll()).headers)
    headers_seen.append((await evil.send_raw(b"[]")).headers)
    for headers in headers_seen:
        lowered = {name.lower() for name in headers}
        assert "access-control-allow-credentials" not in lowered, headers
