"""Server-Sent Events on a real `tidings serve` (docs/sse.md): headers, events and ids,
pings, resuming with Last-Event-ID, private channels and their tokens, refusals and limits.

The client is aiohttp reading the raw stream, so each test sees exactly the bytes an
EventSource would parse (tests/browser/test_chromium_sse.py runs a real one).
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, unique
from recovery_helpers import batch, trigger

import tidings
from tidings.protocol import sse

pytestmark = pytest.mark.timeout(10 * TIMEOUT)

HISTORY = [{"pattern": "hist-*", "size": 50, "ttl": 300}]
HISTORY += [{"pattern": "private-hist-*", "size": 50, "ttl": 300}]
APPS: list[dict[str, Any]] = [
    {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, "history": HISTORY},
    {"id": "2", "key": "quota-key", "secret": "quota-secret", "max_connections": 1},
]


@dataclass
class Block:
    """One SSE block: its fields as the browser would read them."""

    id: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: str | None = None
    event: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        return dict(json.loads("\n".join(self.data)))


class Stream:
    """An open SSE response, read block by block."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def block(self) -> Block:
        block = Block()
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await self.response.content.readline()).decode()
                if line == "":
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if line == "":
                    return block
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    block.comments.append(value)
                elif name == "data":
                    block.data.append(value)
                elif name == "id":
                    block.id = value
                elif name == "retry":
                    block.retry = value
                elif name == "event":
                    block.event = value

    async def message(self) -> Block:
        """The next block that carries data (an event ``onmessage`` would get)."""
        while True:
            block = await self.block()
            if block.data:
                return block

    async def opened(self) -> Block:
        """Read the prelude (comment, retry) and the first id; returns the id block."""
        first = await self.block()
        assert first.comments == ["tidings"]
        retry = await self.block()
        assert retry.retry == str(sse.RETRY_MS)
        return await self.block()


class Client:
    """An aiohttp session that closes every response it opened (streams never end alone)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.responses: list[aiohttp.ClientResponse] = []

    async def get(self, address: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return self._keep(await self.session.get(address, **kwargs))

    async def options(self, address: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return self._keep(await self.session.options(address, **kwargs))

    def _keep(self, response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        self.responses.append(response)
        return response


@pytest.fixture
async def http() -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        client = Client(session)
        yield client
        for response in client.responses:
            response.close()


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    return make_server(APPS, sse_ping_interval=0.5)


@pytest.fixture(params=["memory", "redis"])
def either(request: pytest.FixtureRequest, make_server: Callable[..., Any]) -> Any:
    """A server keeping history in memory, or in Redis (a fresh key prefix)."""
    if request.param == "memory":
        return make_server(APPS)
    redis = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return make_server(APPS, redis=redis.url, redis_prefix=prefix)


def url(server: Any, *channels: str, key: str = APP_KEY, **query: str) -> str:
    parts = [f"channel={c}" for c in channels] + [f"{k}={v}" for k, v in query.items()]
    return f"{server.http_url}/app/{key}/events?{'&'.join(parts)}"


def offsets(event_id: str | None) -> dict[str, int]:
    """The offset of each channel tag in an id."""
    assert event_id is not None
    parts = event_id.split(".")[1:]
    return {p.split("-")[0]: int(p.rsplit("-", 1)[1]) for p in parts}


async def send(server: Any, channel: str, data: str, event: str = "tick") -> None:
    await asyncio.to_thread(trigger, server.http_url, channel, event, data)


async def open_stream(http: Client, address: str, headers: dict[str, str] | None = None) -> Stream:
    response = await http.get(address, headers=headers, timeout=aiohttp.ClientTimeout(None))
    assert response.status == 200, await response.text()
    return Stream(response)


async def test_headers_prelude_and_an_event_per_message(server: Any, http: Any) -> None:
    hist, plain = unique("hist"), unique("plain")
    stream = await open_stream(http, url(server, hist, plain), {"Origin": "https://a.example"})
    headers = stream.response.headers
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "private, no-cache, no-store, must-revalidate, max-age=0"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["Pragma"] == "no-cache" and headers["Expires"] == "0"
    assert headers["Access-Control-Allow-Origin"] == "https://a.example"
    first = await stream.opened()
    # Only the history channel has a position: its epoch, at offset 0 (nothing published).
    assert first.data == [] and first.id is not None
    version, part = first.id.split(".")
    assert version == "1" and part.startswith(sse.tag(hist) + "-") and part.endswith("-0")
    epoch = part.split("-")[1]

    await send(server, hist, "one")
    block = await stream.message()
    assert block.event is None  # every event is a plain "message": onmessage gets them all
    assert block.message == {"event": "tick", "channel": hist, "data": "one"}
    assert block.id == f"1.{sse.tag(hist)}-{epoch}-1"

    await send(server, plain, "two")
    block = await stream.message()
    assert block.message == {"event": "tick", "channel": plain, "data": "two"}
    assert block.id is None  # a channel without history moves no position


async def test_a_quiet_stream_is_pinged(server: Any, http: Any) -> None:
    stream = await open_stream(http, url(server, unique("plain")))
    await stream.block()  # the prelude comment
    await stream.block()  # retry
    pings = 0
    while pings < 2:  # pinged again and again: each ping counts as the client's pong
        block = await stream.block()
        assert block.comments == ["ping"], block
        pings += 1


async def test_last_event_id_resumes_with_exactly_the_missed_events(either: Any, http: Any) -> None:
    server = either
    hist, other = unique("hist"), unique("hist")
    stream = await open_stream(http, url(server, hist, other))
    await stream.opened()
    for n in (1, 2):
        await send(server, hist, str(n))
    await send(server, other, "a")
    seen = [(await stream.message()) for _ in range(3)]
    last = seen[-1].id
    assert last is not None
    stream.response.close()

    for n in (3, 4):
        await send(server, hist, str(n))
    await send(server, other, "b")
    again = await open_stream(http, url(server, hist, other), {"Last-Event-ID": last})
    first = await again.opened()
    assert first.id == last  # where the client was, until the replay moves it
    replayed = [(await again.message()) for _ in range(3)]
    assert [(b.message["channel"], b.message["data"]) for b in replayed] == [
        (hist, "3"),
        (hist, "4"),
        (other, "b"),
    ]
    await send(server, hist, "5")
    live = await again.message()
    assert live.message["data"] == "5"
    assert offsets(live.id) == {sse.tag(hist): 5, sse.tag(other): 2}

    # The same id in the query (a first connect) resumes the same way.
    third = await open_stream(http, url(server, hist, other, last_event_id=last))
    await third.opened()
    # (Channels are subscribed one after the other: the order holds within each channel.)
    resumed = [(await third.message()).message for _ in range(4)]
    assert [m["data"] for m in resumed if m["channel"] == hist] == ["3", "4", "5"]
    assert [m["data"] for m in resumed if m["channel"] == other] == ["b"]


async def test_an_id_it_cannot_use_gets_tidings_unrecovered(either: Any, http: Any) -> None:
    server = either
    hist = unique("hist")
    await send(server, hist, "1")
    stale = f"1.{sse.tag(hist)}-oldepoch-1"  # another epoch: the history was reset
    stream = await open_stream(http, url(server, hist), {"Last-Event-ID": stale})
    first = await stream.opened()
    notice = await stream.message()
    assert notice.message["event"] == "tidings:unrecovered"
    assert notice.message["channel"] == hist
    assert json.loads(notice.message["data"])["offset"] == 1
    assert first.id is not None and first.id.endswith("-1")  # at the top now

    garbage = await open_stream(http, url(server, hist), {"Last-Event-ID": "not-ours"})
    await garbage.opened()
    notice = await garbage.message()
    assert notice.message["event"] == "tidings:unrecovered"
    await send(server, hist, "2")
    assert (await garbage.message()).message["data"] == "2"


async def test_private_channels_need_a_valid_token(server: Any, http: Any) -> None:
    private, public = unique("private-hist"), unique("plain")
    address = url(server, private, public)
    refusals = {
        "": "private channels need a token",
        "&token=123": "token must be",
        "&token=" + "1" * 200: "token too long",
        "&token=" + tidings.sse_token("wrong-secret", [private]): "does not sign",
        "&token=" + tidings.sse_token(APP_SECRET, [private, unique("private-x")]): "does not",
        "&token=" + tidings.sse_token(APP_SECRET, [private], now=1000.0): "expired",
    }
    for suffix, reason in refusals.items():
        response = await http.get(address + suffix)
        assert response.status == 401, suffix
        assert reason in (await response.json())["error"]

    token = tidings.sse_token(APP_SECRET, [private, public], ttl=60)
    stream = await open_stream(http, f"{address}&token={token}")
    await stream.opened()
    await send(server, private, "secret")
    block = await stream.message()
    assert block.message == {"event": "tick", "channel": private, "data": "secret"}


async def test_bad_requests_are_refused_with_a_json_error(server: Any, http: Any) -> None:
    cases = [
        (url(server, "x", key="nope"), 404, "No app"),
        (f"{server.http_url}/app/{APP_KEY}/events", 400, "at least one channel"),
        (url(server, *[f"c{i}" for i in range(11)]), 400, "at most 10"),
        (url(server, "bad%20name"), 400, "may contain only"),
        (url(server, "private-encrypted-x"), 400, "encrypted"),
        (url(server, "presence-x"), 400, "presence"),
    ]
    for address, status, reason in cases:
        response = await http.get(address)
        assert response.status == status, address
        assert response.headers["Content-Type"].startswith("application/json")
        assert reason in (await response.json())["error"], address


async def test_streams_count_against_the_apps_connection_quota(server: Any, http: Any) -> None:
    stream = await open_stream(http, url(server, "news", key="quota-key"))
    await stream.block()
    response = await http.get(url(server, "news", key="quota-key"))
    assert response.status == 403
    assert "quota" in (await response.json())["error"].lower()
    stream.response.close()
    # Once the first stream is gone, a new one is let in.
    async with asyncio.timeout(TIMEOUT):
        while True:
            response = await http.get(url(server, "news", key="quota-key"))
            if response.status == 200:
                break
            await asyncio.sleep(0.05)


async def test_cors_preflight_allows_last_event_id(server: Any, http: Any) -> None:
    response = await http.options(
        url(server, "news"),
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status == 204
    assert "Last-Event-ID" in response.headers["Access-Control-Allow-Headers"]


async def test_a_stream_that_stops_reading_is_cut(make_server: Callable[..., Any]) -> None:
    """A client that reads nothing (a tiny receive window, then silence) while events pile
    up: past max_write_buffer the stream is cut and counted as a slow consumer."""
    server = make_server(APPS, max_write_buffer=1024)
    channel = unique("plain")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            f"GET /app/{APP_KEY}/events?channel={channel} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\n\r\n".encode()
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        while (await reader.readline()) != b"retry: %d\n" % sse.RETRY_MS:
            pass
        payload = "x" * 8000
        cut = f'tidings_slow_consumer_closes_total{{app="{APP_ID}"}} 1.0'
        async with asyncio.timeout(4 * TIMEOUT):
            while cut not in await metrics(server):
                await asyncio.to_thread(batch, server.http_url, channel, [payload] * 10)
        # The client gets what was on its way, then the end of the connection.
        async with asyncio.timeout(4 * TIMEOUT):
            while await reader.read(65536):
                pass
    finally:
        writer.close()


async def metrics(server: Any) -> str:
    def read() -> str:
        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=TIMEOUT) as r:
            return str(r.read().decode())

    text = await asyncio.to_thread(read)
    return "\n".join(line for line in text.splitlines() if "slow_consumer" in line)


async def test_a_full_node_tells_the_browser_to_retry(
    make_server: Callable[..., Any], http: Client
) -> None:
    """Over the node's max_connections: a 200 stream that says why and ends, since
    EventSource retries after a 200 but gives up for good on any other status."""
    server = make_server(APPS, max_connections=1)
    first = await open_stream(http, url(server, "news"))
    await first.block()
    second = await open_stream(http, url(server, "news"))
    await second.block()  # the prelude
    await second.block()  # retry: 2000
    refusal = (await second.message()).message
    assert refusal["event"] == "pusher:error" and refusal["data"]["code"] == 4100
    with pytest.raises(EOFError):
        await second.block()
