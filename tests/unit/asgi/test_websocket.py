"""tidings.asgi.websocket: the ASGI connection's sends, driven by hand, parked only when the
server's ``send`` suspends, bounded, in order.

The ``send`` here behaves as uvicorn's does: it waits on an event that is set while the
transport takes writes, so it completes without suspending then, and suspends otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidings.asgi.websocket import AsgiConnection, TextMessages
from tidings.core.apps import App
from tidings.core.hub import Coalescer, Hub, Writer, write_to_many
from tidings.core.publication import Publication
from tidings.node import AppCounters
from tidings.protocol.frames import text_frame
from tidings.protocol.session import Session
from tidings.server import fanout

APP = App(id="1", key="key", secret="secret")


class Server:
    """One socket's ASGI ``send``: what it was sent, and whether it takes writes now."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.gone = False  # the peer vanished: every send raises, as uvicorn's then does

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        if self.gone:
            raise OSError("client disconnected")
        self.sent.append(message)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


class Harness:
    def __init__(self, max_backlog: int = 1 << 20) -> None:
        self.texts = TextMessages()
        self.counters = AppCounters()
        self.outgoing = Coalescer(lambda callback: None)  # flushed by hand
        self.slow: list[AsgiConnection] = []
        self.max_backlog = max_backlog

    def connect(self, socket_id: str = "1.1") -> tuple[AsgiConnection, Server]:
        server = Server()
        session = Session(socket_id, APP.session_policy(120.0, 30.0), 0.0)
        connection = AsgiConnection(
            session,
            APP,
            server.send,  # type: ignore[arg-type]
            self.texts,
            self.outgoing,
            self.counters,
            self.max_backlog,
            self.slow.append,
        )
        return connection, server


def msg(text: str) -> bytes:
    """A Pusher message as the node hands it over: JSON, unframed."""
    return text.encode()


async def test_a_send_that_does_not_suspend_is_sent_at_once_without_a_task() -> None:
    connection, server = Harness().connect()
    connection.send(msg('{"event":"a"}'))
    assert server.texts() == ['{"event":"a"}']
    assert connection.sending is None


# Both writers a node may have: the core's, and the native one of `tidings serve` (which
# hands the publication to anything that is not a WebSocket sink).
WRITERS = pytest.mark.parametrize("writer", [write_to_many, fanout.write_many])


@WRITERS
async def test_a_coalesced_publication_is_one_message_per_event_shared_by_every_recipient(
    writer: Writer,
) -> None:
    harness = Harness()
    (one, server_one), (two, server_two) = harness.connect("1.1"), harness.connect("2.2")
    joined = Publication([msg('{"event":"a"}'), msg('{"event":"b"}'), msg("é" * 200)])
    assert writer(joined, {"1.1": one, "2.2": two}, None) == 2
    assert server_one.texts() == ['{"event":"a"}', '{"event":"b"}', "é" * 200]
    assert all(a is b for a, b in zip(server_one.sent, server_two.sent, strict=True))
    # A publication is counted by the Coalescer, not by the connection.
    assert harness.counters.bytes_out == 0


async def test_a_suspended_send_is_parked_and_what_follows_keeps_its_order() -> None:
    connection, server = Harness().connect()
    server.writable.clear()
    for n in range(5):
        connection.send(msg(f"[{n}]"))
    parked = connection.sending
    assert parked is not None and server.sent == []
    server.writable.set()
    await parked
    assert server.texts() == [f"[{n}]" for n in range(5)]
    assert connection.sending is None
    connection.send(msg("[5]"))  # sent at once again
    assert server.texts()[-1] == "[5]"


async def test_a_backlog_over_the_limit_closes_4100_and_drops_what_waits() -> None:
    harness = Harness(max_backlog=1000)
    connection, server = harness.connect()
    server.writable.clear()
    connection.send(msg("x" * 600))  # suspends: parked
    connection.send(msg("y" * 600))  # waits: 600
    assert not connection.closing
    connection.send(msg("z" * 600))  # 1200 > 1000: slow consumer
    assert connection.closing and connection.session.closed
    assert harness.slow == [connection] and harness.counters.slow_consumers == 1
    connection.send(msg("after"))  # nothing more is written
    parked = connection.sending
    assert parked is not None
    server.writable.set()  # the client reads again
    await parked
    assert server.texts() == ["x" * 600]
    assert server.sent[-1] == {"type": "websocket.close", "code": 4100, "reason": "Slow consumer"}


async def test_close_is_sent_once_after_what_was_sent_before() -> None:
    connection, server = Harness().connect()
    connection.send(msg("[1]"))
    connection.close(4200, "Server shutting down")
    connection.close(4009, "again")
    connection.send(msg("[2]"))
    assert server.sent == [
        {"type": "websocket.send", "text": "[1]"},
        {"type": "websocket.close", "code": 4200, "reason": "Server shutting down"},
    ]


@WRITERS
async def test_publications_pending_in_the_coalescer_go_before_a_direct_msg(
    writer: Writer,
) -> None:
    harness = Harness()
    connection, server = harness.connect()
    hub = Hub(writer, harness.outgoing.flush)
    hub.add("news", connection)
    published = msg('{"event":"published"}')
    harness.outgoing.add(hub, "news", published, None, harness.counters)
    connection.send(msg('{"event":"reply"}'))
    assert server.texts() == ['{"event":"published"}', '{"event":"reply"}']
    # Counted once, by the Coalescer, as the frame a WebSocket client would have read.
    assert harness.counters.bytes_out == len(text_frame(published))


async def test_a_send_the_server_refuses_ends_all_writing() -> None:
    connection, server = Harness().connect()
    server.gone = True
    connection.send(msg("[1]"))
    assert connection.closing and connection.sending is None
    connection.close(1000, "")  # already closing: nothing is sent
    assert server.sent == []


async def test_cancelling_a_parked_send_cancels_the_server_send() -> None:
    connection, server = Harness().connect()
    server.writable.clear()
    connection.send(msg("[1]"))
    parked = connection.sending
    assert parked is not None
    await asyncio.sleep(0)  # the task is running, suspended in the server's send
    parked.cancel()
    await asyncio.wait([parked])
    assert parked.cancelled() and connection.sending is None
    server.writable.set()
    assert server.sent == []
