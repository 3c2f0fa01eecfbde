"""HTTP fallback sessions without sticky routing: polls and sends that land on a process
that does not own the session are relayed to its owner, every event arrives once, in
order, and the owner applies the client's sends in the order the client posted them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pusher
from fallback_helpers import (
    PING,
    PRELUDE,
    SUBSCRIPTION_COUNT,
    FallbackSession,
    assert_json_error,
    send_body,
)
from pusher_helpers import SocketOpener, channel_auth

ANOTHER_RECEIVER = "Another connection still open"

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP_ID, APP_KEY, APP_SECRET = "12345", "app-key", "app-secret"
EVENTS = 30


class FallbackClient:
    """A pusher-js-like xhr_polling session whose requests can go to any node."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.path = f"/pusher/app/{APP_KEY}/{secrets.randbelow(1000)}/{secrets.token_hex(4)}"
        self.messages: list[dict[str, Any]] = []

    async def poll(self, base_url: str) -> str:
        url = f"{base_url}{self.path}/xhr?protocol=7&client=js&version=8.6.0"
        async with self.http.post(url, timeout=aiohttp.ClientTimeout(total=8 * TIMEOUT)) as r:
            assert r.status == 200, await r.text()
            body = await r.text()
        for line in body.splitlines():
            if line.startswith("a"):
                self.messages.extend(json.loads(m) for m in json.loads(line[1:]))
            assert not line.startswith("c"), f"session closed: {line}"
        return body

    async def send(self, base_url: str, message: dict[str, Any]) -> None:
        url = f"{base_url}{self.path}/xhr_send"
        async with self.http.post(url, data=json.dumps([json.dumps(message)])) as r:
            assert r.status == 204, await r.text()

    def events(self, name: str) -> list[Any]:
        return [json.loads(m["data"]) for m in self.messages if m.get("event") == name]


def trigger(port: int, channel: str, n: int) -> None:
    client = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=port, ssl=False
    )
    client.trigger(channel, "tick", {"n": n})


async def exchange(urls: list[str], ports: list[int], http: aiohttp.ClientSession) -> None:
    """Open a session on the first URL, then spread every request over all of them."""
    client = FallbackClient(http)
    assert await client.poll(urls[0]) == "o\n"
    await client.poll(urls[1 % len(urls)])
    assert client.messages[0]["event"] == "pusher:connection_established"
    channel = f"relay-{secrets.token_hex(4)}"
    await client.send(urls[-1], {"event": "pusher:subscribe", "data": {"channel": channel}})
    i = 0
    while not any(m["event"] == "pusher_internal:subscription_succeeded" for m in client.messages):
        await client.poll(urls[i % len(urls)])
        i += 1

    async def publish() -> None:
        for n in range(EVENTS):
            await asyncio.to_thread(trigger, ports[n % len(ports)], channel, n)

    publisher = asyncio.create_task(publish())
    deadline = asyncio.get_running_loop().time() + 6 * TIMEOUT
    while len(client.events("tick")) < EVENTS:
        assert asyncio.get_running_loop().time() < deadline, client.events("tick")
        await client.poll(urls[i % len(urls)])
        i += 1
    await publisher
    assert_each_once_in_node_order(client.events("tick"), len(ports))
    await client.send(urls[0], {"event": "pusher:ping", "data": {}})
    while not any(m["event"] == "pusher:pong" for m in client.messages):
        await client.poll(urls[i % len(urls)])
        i += 1
    assert_each_once_in_node_order(client.events("tick"), len(ports))  # nothing twice


def assert_each_once_in_node_order(ticks: list[Any], nodes: int) -> None:
    """Every event exactly once, and in publish order per publishing node: that is the bus's
    promise. Across nodes it promises nothing: event n+1, triggered on the session owner
    after event n's trigger on the other node returned, can be written before n arrives
    from Redis."""
    received = [tick["n"] for tick in ticks]
    assert sorted(received) == list(range(EVENTS)), received
    for node in range(nodes):
        mine = [n for n in received if n % nodes == node]
        assert mine == sorted(mine), (node, received)


async def test_polls_and_sends_spread_over_two_nodes(
    make_server: Any, redis_backend: str, redis_prefix: str
) -> None:
    settings = {"redis": redis_backend, "redis_prefix": redis_prefix, "node_ttl": 3}
    a, b = make_server(**settings), make_server(**settings)
    async with aiohttp.ClientSession() as http:
        await exchange([a.http_url, b.http_url], [a.port, b.port], http)


async def test_workers_spread_polls_and_deliver_exactly_once(
    make_server: Any, redis_backend: str, redis_prefix: str
) -> None:
    server = make_server(workers=2, redis=redis_backend, redis_prefix=redis_prefix)
    # A new TCP connection per request lets SO_REUSEPORT spread requests over the workers.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        nodes: set[str] = set()
        deadline = asyncio.get_running_loop().time() + 4 * TIMEOUT
        while len(nodes) < 2 and asyncio.get_running_loop().time() < deadline:
            async with http.get(f"{server.http_url}/ready") as r:
                nodes.add((await r.json())["node"])
        assert len(nodes) == 2, f"requests reached only {nodes}"
        await exchange([server.http_url], [server.port], http)


async def test_a_session_belongs_to_its_client_on_every_node(make_cluster: Any) -> None:
    """Through a node that does not own the session: a second receiver is refused with
    2010, another Origin with 403 (its sends are dropped by the owner), and the client's
    own stream reopened there takes over (pusher-js's reconnect after 256 KiB)."""
    a, b = make_cluster(2)
    channel = f"owned-{secrets.token_hex(4)}"
    async with aiohttp.ClientSession() as http:
        owner = FallbackSession(http, a.http_url)
        via_b = FallbackSession(http, b.http_url, path=owner.path)
        stranger = FallbackSession(http, b.http_url, path=owner.path, origin="https://x.example")
        async with owner.stream() as stream:
            await owner.open_stream(stream)
            await via_b.subscribe(channel)  # the owner's own send, relayed
            succeeded, *_ = await stream.messages()
            assert succeeded["event"] == "pusher_internal:subscription_succeeded"

            async with asyncio.timeout(4 * TIMEOUT):
                assert await via_b.poll_frames() == [("c", [2010, ANOTHER_RECEIVER])]
            assert_json_error(await stranger.poll(), 403)
            assert (await stranger.send_raw(json.dumps([json.dumps(PING)]).encode())).status == 204
            await asyncio.to_thread(trigger, b.port, channel, 1)
            seen: list[str] = []
            while "tick" not in seen:
                seen += [m["event"] for m in await stream.messages()]
            assert "pusher:pong" not in seen, seen  # the stranger's ping was dropped
            stream.response.close()  # the client aborts its stream ...
        async with via_b.stream() as stream:  # ... and opens the next one through b
            assert await stream.line() == PRELUDE
            await via_b.send(PING)
            assert await stream.messages() == [{"event": "pusher:pong", "data": "{}"}]


class HeldSend:
    """An ``xhr_send`` whose request line and headers go out now and whose body goes out
    later: a send that is still on its way (a slow client link, a busy node) while the
    client's next one arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(cls, url: str, length: int) -> HeldSend:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = (
            f"POST {parts.path}?{parts.query} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {length}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        return cls(reader, writer)

    async def finish(self, body: bytes) -> int:
        """Send the body; the response's status."""
        try:
            self.writer.write(body)
            await self.writer.drain()
            async with asyncio.timeout(TIMEOUT):
                status_line = await self.reader.readline()
            return int(status_line.split()[1])
        finally:
            self.writer.close()
            await self.writer.wait_closed()


async def test_a_send_relayed_through_another_node_is_not_overtaken(
    make_cluster: Any, open_socket: SocketOpener
) -> None:
    """pusher-js posts a subscribe (request 2) and then a client event (request 3) without
    waiting for the first answer. The subscribe goes through b and is held up on its way;
    the client event goes to the session's owner a directly and arrives first. The owner
    applies them in the client's numbering: the subscribe, then the event, which reaches
    the channel's other member. (Applied on arrival, the event would be refused: not
    subscribed yet.)"""
    # The owner waits for the gap as long as it may (60 s): far longer than the test takes
    # to let the subscribe go.
    a, b = make_cluster(2, http_send_order_wait=60)
    channel = f"private-order-{secrets.token_hex(4)}"
    listener = await open_socket(b.ws_url)
    await listener.subscribe_private(channel)
    async with aiohttp.ClientSession() as http:
        sender = FallbackSession(http, a.http_url)
        via_b = FallbackSession(http, b.http_url, path=sender.path)
        async with sender.stream(number=1) as stream:
            await sender.open_stream(stream)
            auth = channel_auth(sender.socket_id, channel)
            subscribe = send_body(
                {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}
            )
            held = await HeldSend.start(via_b.url("xhr_send", 2), len(subscribe))
            typed = {"event": "client-typed", "channel": channel, "data": {"text": "hi"}}
            await sender.send(typed, number=3)  # answered at once: pusher-js reads no answer
            assert await held.finish(subscribe) == 204
            await sender.send(PING, number=4)
            events: list[str] = []
            while "pusher:pong" not in events:
                events += [m["event"] for m in await stream.messages(timeout=4 * TIMEOUT)]

    assert [e for e in events if e != SUBSCRIPTION_COUNT] == [
        "pusher_internal:subscription_succeeded",
        "pusher:pong",
    ]
    received = await listener.recv()
    assert (received["event"], json.loads(received["data"])) == ("client-typed", {"text": "hi"})


async def test_a_stream_relayed_by_a_stopping_node_ends_with_4200(make_cluster: Any) -> None:
    """A node that stops (SIGTERM) has the owner of every session whose stream it relays
    close that session with 4200, as it closes its own: pusher-js reconnects at once with a
    new session, instead of seeing its stream cut (1006: a second's wait, and one of the
    streaming transport's two lives)."""
    a, b = make_cluster(2)
    async with aiohttp.ClientSession() as http:
        owner = FallbackSession(http, a.http_url)
        via_b = FallbackSession(http, b.http_url, path=owner.path)
        assert await owner.poll_frames() == [("o", None)]  # opened on a ...
        async with via_b.stream() as stream:  # ... received through b
            assert await stream.line() == PRELUDE
            [established] = await stream.messages()
            assert established["event"] == "pusher:connection_established"
            stopping = asyncio.create_task(asyncio.to_thread(b.stop))
            assert await stream.frame(4 * TIMEOUT) == ("c", [4200, "Server shutting down"])
            assert await stream.ended()
        assert await stopping == 0
        # The owner forgot the session: its name opens a new one.
        assert await owner.poll_frames() == [("o", None)]
