"""server/websocket.py: a WebSocketConnection whose peer vanished before the node knew.

Real TCP sockets on 127.0.0.1, on asyncio's loop and on uvloop (whose closed transports
raise on write, where asyncio's only log).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from aiohttp import web

from event_loops import LOOPS, run_on
from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry
from tidings.core.hub import Coalescer
from tidings.node import AppCounters, Node
from tidings.server.websocket import WebSocketConnection

APP = App("12345", "app-key", "app-secret")

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    return functools.partial(run_on, request.param)


@asynccontextmanager
async def vanished_connections(count: int) -> AsyncIterator[list[WebSocketConnection]]:
    """``count`` connections over real sockets whose transports are already closed (as
    when the client process was killed), the node not told yet."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(cast(asyncio.Transport, transport))

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", port))
        clients.append(client)
    async with asyncio.timeout(5):
        while len(transports) < count:
            await asyncio.sleep(0.01)
    node = Node(AppRegistry.of([APP]), MemoryBroker())
    ws = cast(web.WebSocketResponse, None)  # never reached: nothing is closed through it
    connections = [
        WebSocketConnection(
            node.new_session(APP), APP, ws, t, 1 << 20, set(), Coalescer(print), AppCounters()
        )
        for t in transports
    ]
    for t in transports:
        t.abort()
    await asyncio.sleep(0.05)  # uvloop closes the handles on a later loop iteration
    try:
        yield connections
    finally:
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()


def test_a_write_to_a_closed_transport_is_a_no_op_that_marks_closing(run: Run) -> None:
    async def main() -> None:
        async with vanished_connections(2) as (sent, published):
            sent.send(b"{}")
            published.deliver(b"\x81\x02{}")
            assert sent.closing and published.closing
            sent.send(b"{}")  # and again: nothing is tried any more

    run(main())


def test_a_slow_consumer_whose_transport_closed_is_dropped_quietly(run: Run) -> None:
    async def main() -> None:
        async with vanished_connections(1) as (connection,):
            connection.slow_consumer()
            assert connection.closing and connection.session.closed

    run(main())
