"""Recovery (docs/recovery.md) over every way a client reaches Tidings, not only the
WebSocket of `tidings serve` (test_recovery.py): pusher-js's HTTP fallbacks
(``xhr_streaming``, ``xhr_polling``) and the ASGI app (``rt.asgi()`` under uvicorn), its
WebSocket and its fallbacks. One scenario for each: an opted-in subscription gets its
position and every event's offset; after its connection is gone, a new one subscribing
with that position gets exactly the missed events, minus the old socket's own, then live.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from fallback_helpers import SUBSCRIPTION_COUNT, FallbackSession, Stream
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, SocketOpener, unique
from recovery_helpers import SUCCEEDED, trigger

APPS_DIR = str(Path(__file__).resolve().parent / "asgi_apps")
if APPS_DIR not in sys.path:
    sys.path.insert(0, APPS_DIR)

from asgi_server import AsgiServer  # noqa: E402

pytestmark = pytest.mark.timeout(20 * TIMEOUT)

HISTORY = [{"pattern": "hist-*", "size": 100, "ttl": 300}]
APPS: list[dict[str, Any]] = [
    {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, "history": HISTORY}
]


class Client(Protocol):
    """One connection of some transport, as a recovering client sees it."""

    socket_id: str

    async def send(self, message: dict[str, Any]) -> None: ...

    async def next(self) -> dict[str, Any]:
        """The next message (subscription counts skipped)."""
        ...


Connect = Callable[[], Any]  # an async context manager of a Client


class WebSocketClient:
    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.socket_id: str = sock.socket_id

    async def send(self, message: dict[str, Any]) -> None:
        await self.sock.send_json(message)

    async def next(self) -> dict[str, Any]:
        message: dict[str, Any] = await self.sock.recv()
        return message


class PollingClient:
    def __init__(self, session: FallbackSession) -> None:
        self.session = session
        self.socket_id = session.socket_id
        self.pending: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.session.send(message)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while not self.pending:
                for kind, value in await self.session.poll_frames():
                    if kind == "a":
                        self.pending += [m for m in value if m["event"] != SUBSCRIPTION_COUNT]
        return self.pending.pop(0)


class StreamingClient(PollingClient):
    def __init__(self, session: FallbackSession, stream: Stream) -> None:
        super().__init__(session)
        self.stream = stream

    async def next(self) -> dict[str, Any]:
        while not self.pending:
            messages = await self.stream.messages()
            self.pending += [m for m in messages if m["event"] != SUBSCRIPTION_COUNT]
        return self.pending.pop(0)


def connector(
    transport: str, http_url: str, ws_url: str, open_socket: SocketOpener
) -> Callable[[], Any]:
    @asynccontextmanager
    async def connect() -> AsyncIterator[Client]:
        if transport == "ws":
            sock = await open_socket(ws_url)
            try:
                yield WebSocketClient(sock)
            finally:
                await sock.close()
            return
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(aiohttp.ClientSession())
            session = FallbackSession(http, http_url)
            if transport == "xhr_polling":
                await session.open_polling()
                yield PollingClient(session)
            else:
                stream = await stack.enter_async_context(session.stream())
                await session.open_stream(stream)
                yield StreamingClient(session, stream)

    return connect


async def subscribe(client: Client, channel: str, tidings: dict[str, Any]) -> dict[str, Any]:
    data = {"channel": channel, "tidings": tidings}
    await client.send({"event": "pusher:subscribe", "data": data})
    message = await client.next()
    assert message["event"] == SUCCEEDED and message["channel"] == channel, message
    return dict(json.loads(message["data"]))


async def events(client: Client, n: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(n):
        message = await client.next()
        assert message["event"] == "tick", message
        out.append((message["tidings"]["offset"], message["data"]))
    return out


async def scenario(http_url: str, connect: Callable[[], Any]) -> None:
    channel = unique("hist-transport")

    async def publish(data: str, socket_id: str | None = None) -> None:
        await asyncio.to_thread(trigger, http_url, channel, "tick", data, socket_id)

    async with connect() as first:
        data = await subscribe(first, channel, {"v": 1})
        assert "recovered" not in data and data["tidings"]["offset"] == 0, data
        epoch = data["tidings"]["epoch"]
        for n in (1, 2):
            await publish(str(n))
        assert await events(first, 2) == [(1, "1"), (2, "2")]
        old = first.socket_id
    # The connection is gone; meanwhile three events, one of them sent by the old socket.
    await publish("3")
    await publish("4", socket_id=old)
    await publish("5")
    async with connect() as second:
        assert second.socket_id != old
        recover = {"epoch": epoch, "offset": 2, "socket_id": old}
        data = await subscribe(second, channel, {"v": 1, "recover": recover})
        assert data["recovered"] is True, data
        assert data["tidings"] == {"epoch": epoch, "offset": 5}, data
        assert await events(second, 2) == [(3, "3"), (5, "5")]
        await publish("6")
        assert await events(second, 1) == [(6, "6")]


@pytest.mark.parametrize("transport", ["xhr_streaming", "xhr_polling"])
async def test_recovery_over_the_http_fallbacks(
    transport: str, make_server: Callable[..., Any], open_socket: SocketOpener
) -> None:
    server = make_server(APPS)
    await scenario(server.http_url, connector(transport, server.http_url, "", open_socket))


@pytest.fixture
def asgi_server(tmp_path: Path) -> Iterator[AsgiServer]:
    """Tidings alone (``rt.asgi()``) under uvicorn, with the history rules of APPS."""
    server = AsgiServer("plain", tmp_path, env={"TIDINGS_TEST_HISTORY": json.dumps(HISTORY)})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["ws", "xhr_streaming", "xhr_polling"])
async def test_recovery_through_the_asgi_app_under_uvicorn(
    transport: str, asgi_server: AsgiServer, open_socket: SocketOpener
) -> None:
    url = asgi_server.http_url
    await scenario(url, connector(transport, url, asgi_server.ws_url, open_socket))
