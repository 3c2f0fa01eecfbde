"""core/connection.py: flush before a direct write, close once, counters from the constructor.

First the base alone, through a small edge that records what it is asked to do; then the
three real edges (aiohttp WebSocket over a real socket pair, HTTP fallback session, ASGI),
each run through the same checks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest
from aiohttp import web

from tidings.asgi.websocket import AsgiConnection, TextMessages
from tidings.core.apps import App
from tidings.core.connection import ConnectionBase
from tidings.core.counters import AppCounters
from tidings.core.hub import Coalescer, Hub
from tidings.core.publication import Publication
from tidings.protocol.session import Session
from tidings.server import fanout
from tidings.server.http_session import ClientBinding, HttpSession
from tidings.server.websocket import WebSocketConnection

APP = App(id="1", key="key", secret="secret")
TIMEOUT = 5.0


def new_session(socket_id: str = "1.1") -> Session:
    return Session(socket_id, APP.session_policy(120.0, 30.0), 0.0)


def msg(text: str) -> bytes:
    """A Pusher message as the node hands it over: JSON, unframed."""
    return text.encode()


class Recorder(ConnectionBase):
    """The smallest edge: it records writes, closes and 4100s in one list, in order."""

    __slots__ = ("closing", "counters", "_outgoing", "socket_id", "session", "log")

    def __init__(self, outgoing: Coalescer, counters: AppCounters) -> None:
        super().__init__(outgoing, counters)
        self.session = new_session()
        self.socket_id = self.session.socket_id
        self.log: list[object] = []

    def _write(self, message: bytes) -> None:
        self.log.append(message)

    def _publish(self, publication: Publication) -> None:
        self.log.extend(publication.messages)

    def _closed(self, code: int, reason: str) -> None:
        self.log.append((code, reason))

    def _drop_slow(self) -> None:
        self.log.append("slow")


class Setup:
    """A hub and the node's Coalescer, flushed only when a test says so."""

    def __init__(self, write: Any = None) -> None:
        self.outgoing = Coalescer(lambda callback: None)
        if write is None:
            self.hub = Hub(before_change=self.outgoing.flush)
        else:
            self.hub = Hub(write, self.outgoing.flush)
        self.counters = AppCounters()

    def publish(self, text: str) -> bytes:
        """A publication to channel "c", pending until the Coalescer is flushed."""
        data = msg(text)
        self.outgoing.add(self.hub, "c", data, None, self.counters)
        return data


# --- the base ---------------------------------------------------------------------------


def test_a_direct_write_goes_after_the_publications_made_before_it() -> None:
    setup = Setup()
    connection = Recorder(setup.outgoing, setup.counters)
    setup.hub.add("c", connection)
    published = setup.publish('{"event":"a"}')
    direct = msg('{"event":"pusher:pong"}')
    connection.send(direct)
    assert connection.log == [published, direct]
    assert not setup.outgoing  # nothing left to flush


def test_a_close_goes_after_pending_publications_and_happens_once() -> None:
    setup = Setup()
    connection = Recorder(setup.outgoing, setup.counters)
    setup.hub.add("c", connection)
    published = setup.publish('{"event":"a"}')
    connection.close(4200, "Server shutting down")
    connection.close(4009, "Unauthorized")
    connection.send(msg('{"event":"late"}'))
    setup.publish('{"event":"later"}')
    setup.outgoing.flush()
    assert connection.log == [published, (4200, "Server shutting down")]
    assert connection.closing


def test_a_slow_consumer_is_counted_once_and_closes_the_session() -> None:
    setup = Setup()
    connection = Recorder(setup.outgoing, setup.counters)
    connection.slow_consumer()
    connection.slow_consumer()
    connection.close(4200, "Server shutting down")
    connection.send(msg('{"event":"late"}'))
    assert connection.log == ["slow"]
    assert setup.counters.slow_consumers == 1
    assert connection.session.closed


def test_a_closed_connection_is_not_counted_slow() -> None:
    setup = Setup()
    connection = Recorder(setup.outgoing, setup.counters)
    connection.close(4200, "Server shutting down")
    connection.slow_consumer()
    assert connection.log == [(4200, "Server shutting down")]
    assert setup.counters.slow_consumers == 0


def test_the_counters_are_the_ones_given_at_construction() -> None:
    setup = Setup()
    assert Recorder(setup.outgoing, setup.counters).counters is setup.counters


def test_an_edge_without_its_hooks_cannot_be_built() -> None:
    class Incomplete(ConnectionBase):
        __slots__ = ("closing", "counters", "_outgoing")

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(Coalescer(lambda callback: None), AppCounters())  # type: ignore[abstract]


# --- the three edges ----------------------------------------------------------------------


@dataclass
class Edge:
    """One real connection of an edge, and what its client has received so far."""

    connection: ConnectionBase
    received: Callable[[], AsyncIterator[list[str]]]  # payloads so far, "close <code>" last


async def _poll(read: Callable[[], list[str]]) -> AsyncIterator[list[str]]:
    """Yield what the client holds after each loop iteration (the edge may write later)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            yield read()
            await asyncio.sleep(0)


def _websocket_payloads(data: bytes) -> list[str]:
    """Text frames as their payloads, a close frame as "close <code>" (server frames are
    unmasked; the ones here are short: 7-bit lengths)."""
    out: list[str] = []
    while len(data) >= 2 and len(data) >= 2 + data[1]:
        opcode, length = data[0] & 0x0F, data[1]
        payload, data = data[2 : 2 + length], data[2 + length :]
        if opcode == 0x8:  # RFC 6455 5.5.1: the code is the first two bytes
            out.append(f"close {int.from_bytes(payload[:2], 'big')}")
        else:
            out.append(payload.decode())
    return out


async def websocket_edge(
    setup: Setup, cleanup: list[Callable[[], None]], socket_id: str = "1.1"
) -> Edge:
    """A WebSocketConnection over a real socket pair."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    cleanup += [transport.abort, theirs.close]
    ws = cast(web.WebSocketResponse, None)  # close() then fails and aborts the transport
    connection = WebSocketConnection(
        new_session(socket_id),
        APP,
        ws,
        transport,
        1 << 20,
        set(),
        setup.outgoing,
        setup.counters,
    )
    buffer = bytearray()

    def read() -> list[str]:
        try:
            buffer.extend(theirs.recv(65536))
        except BlockingIOError:
            pass
        return _websocket_payloads(bytes(buffer))

    return Edge(connection, lambda: _poll(read))


async def http_edge(
    setup: Setup, cleanup: list[Callable[[], None]], socket_id: str = "1.1"
) -> Edge:
    connection = HttpSession(
        "key/1/abcdefgh",
        new_session(socket_id),
        APP,
        ClientBinding(None, None),
        1 << 20,
        setup.outgoing,
        setup.counters,
    )
    taken: list[str] = []

    def read() -> list[str]:
        for line in connection.take().splitlines():
            if line.startswith(b"a"):
                taken.extend(orjson.loads(line[1:]))
            elif line.startswith(b"c"):
                taken.append(f"close {orjson.loads(line[1:])[0]}")
        return taken

    return Edge(connection, lambda: _poll(read))


async def asgi_edge(
    setup: Setup, cleanup: list[Callable[[], None]], socket_id: str = "1.1"
) -> Edge:
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            sent.append(f"close {message['code']}")
        else:
            sent.append(message["text"])

    connection = AsgiConnection(
        new_session(socket_id),
        APP,
        send,  # type: ignore[arg-type]
        TextMessages(),
        setup.outgoing,
        setup.counters,
        1 << 20,
        lambda connection: None,
    )
    return Edge(connection, lambda: _poll(lambda: sent))


EDGES = pytest.mark.parametrize("make_edge", [websocket_edge, http_edge, asgi_edge])


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Callable[[], None]]]:
    """What a test opened, closed in its own loop after it."""
    closers: list[Callable[[], None]] = []
    yield closers
    for close in closers:
        close()
    await asyncio.sleep(0)  # the transports finish closing on the next iteration


async def until(edge: Edge, expected: list[str]) -> None:
    """Wait until the client has received exactly ``expected`` (fail on anything else)."""
    async for got in edge.received():
        assert got == expected[: len(got)]
        if got == expected:
            return


@EDGES
async def test_each_edge_writes_a_direct_message_after_earlier_publications(
    make_edge: Callable[..., Any], cleanup: list[Callable[[], None]]
) -> None:
    setup = Setup()
    edge: Edge = await make_edge(setup, cleanup)
    setup.hub.add("c", edge.connection)
    setup.publish('{"event":"a"}')
    edge.connection.send(msg('{"event":"pusher:pong"}'))
    await until(edge, ['{"event":"a"}', '{"event":"pusher:pong"}'])
    assert edge.connection.__class__.__slots__ and not hasattr(edge.connection, "__dict__")
    assert edge.connection.counters is setup.counters


@EDGES
async def test_each_edge_closes_once(
    make_edge: Callable[..., Any], cleanup: list[Callable[[], None]]
) -> None:
    setup = Setup()
    edge: Edge = await make_edge(setup, cleanup)
    setup.hub.add("c", edge.connection)
    edge.connection.slow_consumer()
    edge.connection.slow_consumer()
    edge.connection.close(4200, "Server shutting down")
    edge.connection.send(msg('{"event":"late"}'))
    setup.publish('{"event":"later"}')
    setup.outgoing.flush()
    await until(edge, ["close 4100"])
    assert setup.counters.slow_consumers == 1
    assert edge.connection.session.closed


async def test_every_edge_on_one_hub_gets_a_publication_in_its_own_encoding(
    cleanup: list[Callable[[], None]],
) -> None:
    """The native writer of ``tidings serve``: the WebSocket gets the frame on its socket,
    the fallback and ASGI connections the same Publication, each in its encoding; a
    coalesced run keeps its order, and direct messages go after it on every edge."""
    setup = Setup(fanout.write_many)
    makers = (websocket_edge, http_edge, asgi_edge)
    edges = [await make(setup, cleanup, f"{n}.1") for n, make in enumerate(makers, 1)]
    for edge in edges:
        setup.hub.add("c", edge.connection)
    setup.publish('{"event":"a"}')
    setup.publish('{"event":"b"}')  # same tick: one publication of two messages
    setup.outgoing.flush()
    for edge in edges:
        edge.connection.send(msg('{"event":"pusher:pong"}'))
    for edge in edges:
        await until(edge, ['{"event":"a"}', '{"event":"b"}', '{"event":"pusher:pong"}'])
    assert setup.counters.deliveries == 6  # two messages to three connections
    # bytes_out counts a publication as its WebSocket frames (2-byte headers here) per
    # recipient, and the WebSocket's direct frame: what a WebSocket client reads.
    frame_bytes = 2 * (2 + len(b'{"event":"a"}'))
    assert setup.counters.bytes_out == 3 * frame_bytes + 2 + len(b'{"event":"pusher:pong"}')
