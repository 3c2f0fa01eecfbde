"""server/fanout.py: one publication to many real sockets, native (C) and pure Python.

Every test runs for both writers and on both event loops (asyncio's and uvloop's
transports), with real TCP sockets on 127.0.0.1: the server side holds the transports the
writer writes to, the client side reads what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from event_loops import LOOPS, run_on
from tidings.core.publication import Publication
from tidings.protocol.frames import text_frame
from tidings.server import fanout

# The writers' fourth argument, for the tests whose subscribers are all sinks (they only
# ever get the frame): it would go to a subscriber that is not a sink.
NOT_FOR_SINKS = Publication([b'{"event":"never read"}'])

WRITERS: dict[str, tuple[type[Any], Callable[..., Any]]] = {
    "python": (fanout._PySink, fanout._py_write_many),
}
if fanout.NATIVE:
    from tidings import _fanout

    WRITERS["native"] = (_fanout.Sink, _fanout.write_many)


def test_the_native_writer_is_built() -> None:
    """`make install` builds tidings._fanout with the machine's gcc: it must be there."""
    assert fanout.NATIVE, fanout.describe()


Writer = tuple[type[Any], Callable[..., Any]]


@pytest.fixture(params=sorted(WRITERS))
def writer(request: pytest.FixtureRequest) -> Writer:
    return WRITERS[request.param]


WithPairs = Callable[[Callable[[list["Pair"]], Coroutine[Any, Any, None]]], None]


@pytest.fixture(params=LOOPS)
def with_pairs(request: pytest.FixtureRequest) -> WithPairs:
    """Run ``body(pairs)`` on asyncio's own loop or on uvloop (their transports differ), with
    six connected TCP sockets (see :func:`open_pairs`)."""

    def go(body: Callable[[list[Pair]], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            async with open_pairs() as pairs:
                await body(pairs)

        run_on(request.param, main())

    return go


@dataclass
class Pair:
    transport: asyncio.Transport
    client: socket.socket


@contextlib.asynccontextmanager
async def open_pairs() -> AsyncIterator[list[Pair]]:
    """Six connected TCP sockets: server transports, client sockets (non-blocking)."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
            transports.append(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(6):
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", port))
        clients.append(client)
    while len(transports) < len(clients):
        await asyncio.sleep(0.01)
    try:
        # accept order is connect order on one listening socket
        yield [Pair(t, c) for t, c in zip(transports, clients, strict=True)]
    finally:  # a failed test must still free its sockets (or uvloop never stops)
        for t in transports:
            t.abort()
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()


def make_sinks(base: type[Any], pairs: list[Pair], high_water: int = 1 << 30) -> dict[str, Any]:
    class Conn(base):  # type: ignore[misc, valid-type]
        __slots__ = ("socket_id", "delivered", "slow")

        def deliver(self, frame: bytes) -> None:
            self.delivered += 1
            self.transport.write(frame)

        def slow_consumer(self) -> None:
            self.slow = True

    sinks = {}
    for i, pair in enumerate(pairs):
        sink = Conn()
        sink.socket_id = f"{i}.{i}"
        sink.delivered = 0
        sink.slow = False
        sink.transport = pair.transport
        sink.fd = fanout.socket_fd(pair.transport)
        sink.high_water = high_water
        sinks[sink.socket_id] = sink
    return sinks


async def read_all(client: socket.socket, expected: int, timeout: float = 10.0) -> bytes:
    """Read until ``expected`` bytes arrived (the loop keeps flushing transports)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while len(data) < expected:
            chunk = await loop.sock_recv(client, 1 << 20)
            assert chunk, "connection closed early"
            data += chunk
    return bytes(data)


def nothing_waiting(client: socket.socket) -> bool:
    try:
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return True


def frame(seq: int, size: int) -> bytes:
    body = f"{seq:08d}".encode()
    return body + bytes([65 + seq % 26]) * (size - len(body))


def test_every_socket_gets_every_frame_in_order(writer: Writer, with_pairs: WithPairs) -> None:
    """Frames big enough to fill kernel buffers, so some writes are short and the rest goes
    through the transport; direct transport writes in between (a reply to one socket):
    bytes on every socket stay in order and whole."""

    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs)
        first = pairs[0].transport
        expected = [bytearray() for _ in pairs]
        for seq in range(400):
            data = frame(seq, 1000 + (seq * 7919) % 30_000)
            count, slow, failed = write_many(data, sinks, None, NOT_FOR_SINKS)
            assert (count, slow, failed) == (len(pairs), [], [])
            for buf in expected:
                buf += data
            if seq % 13 == 0:
                marker = b"<direct %d>" % seq
                first.write(marker)
                expected[0] += marker
            if seq % 50 == 0:
                await asyncio.sleep(0)
        for pair, want in zip(pairs, expected, strict=True):
            got = await read_all(pair.client, len(want))
            assert got == bytes(want)

    with_pairs(body)


def test_exclude_and_count(writer: Writer, with_pairs: WithPairs) -> None:
    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs)
        count, slow, failed = write_many(b"hello", sinks, "2.2", NOT_FOR_SINKS)
        assert (count, slow, failed) == (len(pairs) - 1, [], [])
        count, _, _ = write_many(b"hello", sinks, "no.such", NOT_FOR_SINKS)
        assert count == len(pairs)
        for i, pair in enumerate(pairs):
            want = b"hello" if i == 2 else b"hellohello"
            assert await read_all(pair.client, len(want)) == want
        assert nothing_waiting(pairs[2].client)

    with_pairs(body)


def test_closing_sinks_are_never_written_to(writer: Writer, with_pairs: WithPairs) -> None:
    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs)
        sinks["0.0"].closing = True  # the connection said it is closing
        pairs[1].transport.close()  # the transport is closing: its fd may be reused
        count, slow, failed = write_many(b"x", sinks, None, NOT_FOR_SINKS)
        assert (count, slow, failed) == (len(pairs) - 2, [], [])
        await asyncio.sleep(0.05)
        assert nothing_waiting(pairs[0].client)
        assert pairs[1].client.recv(16) == b""  # closed, and nothing written before the FIN
        for pair in pairs[2:]:
            assert await read_all(pair.client, 1) == b"x"

    with_pairs(body)


def test_tls_sinks_and_other_subscribers_get_their_methods(
    writer: Writer, with_pairs: WithPairs
) -> None:
    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs[:2])
        sinks["0.0"].fd = -1  # as for a TLS socket: the transport must encrypt

        class Other:
            """An edge that is not a WebSocket (the fallback, ASGI): it takes the
            publication and encodes it its own way."""

            socket_id = "9.9"

            def __init__(self) -> None:
                self.publications: list[Publication] = []

            def publish(self, publication: Publication) -> None:
                self.publications.append(publication)

        other = Other()
        subscribers: dict[str, Any] = {**sinks, "9.9": other}
        publication = Publication([b'{"event":"a"}', b'{"event":"b"}'])
        data = publication.frame
        count, _, _ = write_many(data, subscribers, None, publication)
        assert count == 3
        assert sinks["0.0"].delivered == 1 and sinks["1.1"].delivered == 0
        assert other.publications[0] is publication  # the object itself: nothing re-encoded
        assert data == text_frame(b'{"event":"a"}') + text_frame(b'{"event":"b"}')
        assert await read_all(pairs[0].client, len(data)) == data
        assert await read_all(pairs[1].client, len(data)) == data

    with_pairs(body)


def test_a_failing_subscriber_never_stops_the_others(writer: Writer, with_pairs: WithPairs) -> None:
    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer

        class Broken:
            socket_id = "0.5"

            def publish(self, publication: Publication) -> None:
                raise RuntimeError("boom")

        sinks = make_sinks(base, pairs[:2])
        subscribers: dict[str, Any] = {"0.5": Broken(), **sinks}
        count, slow, failed = write_many(b"ok", subscribers, None, NOT_FOR_SINKS)
        assert count == 2 and slow == []
        assert len(failed) == 1 and isinstance(failed[0][1], RuntimeError)
        assert failed[0][0] is subscribers["0.5"]
        for pair in pairs[:2]:
            assert await read_all(pair.client, 2) == b"ok"

    with_pairs(body)


def test_a_socket_that_stops_reading_is_reported_slow(
    writer: Writer, with_pairs: WithPairs
) -> None:
    """Nobody reads client 0; the others read as they go. Once client 0's transport holds
    more than the high-water mark it is reported, and only it."""

    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs[:3], high_water=256 * 1024)
        pairs[0].client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = os.urandom(16 * 1024)
        reported: list[Any] = []
        for _ in range(400):
            _, slow, failed = write_many(data, sinks, None, NOT_FOR_SINKS)
            assert failed == []
            reported += slow
            for pair in pairs[1:3]:
                await read_all(pair.client, len(data))
            if reported:
                break
        assert reported and all(s is sinks["0.0"] for s in reported)

    with_pairs(body)


def test_write_many_calls_slow_consumer_and_logs_failures(
    with_pairs: WithPairs, caplog: pytest.LogCaptureFixture
) -> None:
    """The server-side wrapper: slow sinks get slow_consumer(), failures are logged."""

    async def body(pairs: list[Pair]) -> None:
        base = fanout.Sink
        sinks = make_sinks(base, pairs[:1], high_water=-1)  # any buffered byte is too many

        class Broken:
            socket_id = "7.7"

            def publish(self, publication: Publication) -> None:
                raise ValueError("nope")

        pairs[0].transport.pause_reading()
        subscribers: dict[str, Any] = {**sinks, "7.7": Broken()}
        # fill the kernel buffers so the transport has to buffer
        with caplog.at_level(logging.ERROR, logger="tidings.fanout"):
            for _ in range(200):
                fanout.write_many(Publication([b"x" * 64 * 1024]), subscribers, None)
                if sinks["0.0"].slow:
                    break
        assert sinks["0.0"].slow
        assert "writing to 7.7 failed" in caplog.text

    with_pairs(body)


def test_a_sink_whose_transport_closed_is_marked_closing(
    writer: Writer, with_pairs: WithPairs
) -> None:
    """The peer vanished (the transport closed, fully on uvloop) before anyone set the
    sink's flag: the write is skipped and the sink marked closing for good."""

    async def body(pairs: list[Pair]) -> None:
        base, write_many = writer
        sinks = make_sinks(base, pairs[:3])
        pairs[1].transport.abort()
        await asyncio.sleep(0.05)  # uvloop closes the handle on a later loop iteration
        assert write_many(b"x", sinks, None, NOT_FOR_SINKS) == (2, [], [])
        assert sinks["1.1"].closing and not sinks["0.0"].closing
        assert write_many(b"y", sinks, None, NOT_FOR_SINKS) == (2, [], [])

    with_pairs(body)


def test_write_many_goes_on_past_a_raising_slow_consumer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server-side wrapper: every slow sink gets its slow_consumer(), even after one
    raised (the failure is logged)."""

    class Slow:
        def __init__(self, socket_id: str, fails: bool) -> None:
            self.socket_id = socket_id
            self.fails = fails
            self.told = False

        def slow_consumer(self) -> None:
            self.told = True
            if self.fails:
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    first, second = Slow("0.0", fails=True), Slow("1.1", fails=False)
    monkeypatch.setattr(fanout, "_write_many", lambda *_: (2, [first, second], []))
    with caplog.at_level(logging.ERROR, logger="tidings.fanout"):
        assert fanout.write_many(NOT_FOR_SINKS, {}, None) == 2
    assert first.told and second.told
    assert caplog.text.count("writing to 0.0 failed") == 1
