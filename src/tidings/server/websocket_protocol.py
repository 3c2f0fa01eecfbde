"""Our own WebSocket protocol on the socket after aiohttp's handshake (``websocket_engine =
"tidings"``).

aiohttp parses the upgrade request and routes it; :func:`take_over` then answers 101 itself
and moves the transport to a :class:`ProtocolConnection` (or, for the plain upgrade opening
a connection, the lean HTTP front does all this without aiohttp, through the same
:func:`switch_protocols`: server/lean_http.py), an ``asyncio.Protocol`` that is
also the node's connection and the fan-out writer's ``Sink``. From then on aiohttp holds
nothing for the socket (the connection guard keeps counting it under its address), and no
task waits on it: an idle
WebSocket is this one object, its :class:`~tidings.protocol.websocket.FrameReader` and the
transport. Issue 17: aiohttp's own per-connection objects (the request, its handler task,
the reader, queue and writer) were about 11.5 KiB of the 15.2 KiB per idle connection.

Tasks exist only while there is work: one per client message being handled (the node's
``receive`` may await the broker; later frames wait in order, reading paused), one per
closing handshake (it aborts the socket after :data:`CLOSE_HANDSHAKE_TIMEOUT`) and one for
the detach. Activity timeouts and pings are the node's tick, as on every edge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import cast

from aiohttp import web

from tidings.core.apps import App
from tidings.core.hub import Coalescer
from tidings.node import AppCounters, Node
from tidings.protocol import messages
from tidings.protocol import websocket as ws
from tidings.protocol.frames import binary_frame, close_frame, pong_frame, text_frame
from tidings.protocol.session import Session
from tidings.server.connection_guard import GUARD, ConnectionGuard
from tidings.server.websocket import CLOSE_HANDSHAKE_TIMEOUT, WebSocketConnection
from tidings.tasks import report_failure

log = logging.getLogger("tidings.websocket")
trace = logging.getLogger("tidings.debug")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
ABNORMAL = 1006  # RFC 6455 7.4.1: the socket ended without a close frame (never sent)


def accept_key(key: str) -> str:
    """RFC 6455 4.2.2: the Sec-WebSocket-Accept value for the client's key."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def switching_protocols(key: str) -> bytes:
    # No Sec-WebSocket-Extensions: permessage-deflate stays off (docs/conformance.md); no
    # subprotocol: Pusher clients ask for none.
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


class ProtocolConnection(WebSocketConnection, asyncio.Protocol):
    """A client socket read by our :class:`~tidings.protocol.websocket.FrameReader`.

    Writes are :class:`WebSocketConnection`'s (the fan-out writes the shared frame to the
    descriptor; replies are framed here). What is read is handed to the node one message at
    a time, in order."""

    __slots__ = (
        "_node",
        "_reader",
        "_guard",
        "_inbox",
        "_busy",
        "_lost",
        "_gone",
        "_client_code",
        "_head",
    )

    def __init__(
        self,
        node: Node,
        session: Session,
        app: App,
        transport: asyncio.Transport,
        high_water: int,
        tasks: set[asyncio.Task[None]],
        outgoing: Coalescer,
        counters: AppCounters,
        max_message: int,
    ) -> None:
        super().__init__(session, app, None, transport, high_water, tasks, outgoing, counters)
        self._node = node
        self._reader = ws.FrameReader(max_message)
        # Counts this socket under its address until it closes (set by take_over).
        self._guard: ConnectionGuard | None = None
        self._inbox: list[ws.Event] = []  # events waiting for the message being handled
        self._busy = False  # a message is being handled (a task runs node.receive)
        self._lost = False  # the socket is closed (connection_lost ran)
        self._gone: asyncio.Future[None] | None = None  # made when a close begins
        self._client_code: int | None = None  # the code of the client's close frame
        # The 101 not written yet: it goes out with the first frame (switch_protocols).
        self._head = b""

    def _write_transport(self, data: bytes) -> bool:
        head = self._head
        if head:
            self._head = b""
            data = head + data
        return super()._write_transport(data)

    def flush_head(self) -> None:
        """Write the 101 now if no frame has carried it (see :func:`switch_protocols`)."""
        if self._head and not self.closing:
            self._write_transport(b"")

    # -- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        events = self._reader.feed(data)
        if self._busy:
            self._inbox.extend(events)
            # Bounded: one read's events wait; the socket is read again once they are done.
            if not self.transport.is_closing():
                self.transport.pause_reading()
            return
        self._handle(events)

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed WebSocket is a closed one

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._lost = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.lost(self)
        if not self._busy:  # otherwise the message's task detaches when it is done
            self._detach()

    # -- what the reader returns ----------------------------------------------------------

    def _handle(self, events: list[ws.Event]) -> None:
        for index, event in enumerate(events):
            match event:
                case ws.Text(data=text):
                    if self.closing:
                        continue
                    self._busy = True
                    self._inbox = events[index + 1 :]
                    task = asyncio.ensure_future(self._receive(text))
                    self._tasks.add(task)
                    task.add_done_callback(self._received)
                    return
                case ws.Binary(data=data):
                    self._binary(data)
                case ws.Ping(data=data):
                    # RFC 6455 5.5.2: answer with a pong carrying the same payload.
                    if not self.closing:
                        self._write_transport(pong_frame(data))
                case ws.Pong():
                    pass  # Pusher clients' liveness is pusher:ping / activity, not this
                case ws.CloseReceived(code=code):
                    self._close_received(code)
                case ws.Failed(code=code, reason=reason):
                    self._fail(code, reason)

    async def _receive(self, text: str) -> None:
        await self._node.receive(self, text)

    def _received(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        report_failure(task)
        self._busy = False
        if self._lost:  # the socket closed while the message was handled
            self._inbox = []
            self._detach()
            return
        waiting, self._inbox = self._inbox, []
        self._handle(waiting)
        if not self._busy and not self.transport.is_closing():
            self.transport.resume_reading()

    def _binary(self, data: bytes) -> None:
        # Pusher: "Binary WebSocket frames are not supported."
        self.counters.count_error(None)
        self.send(messages.error("binary frames are not supported"))

    def _close_received(self, code: int) -> None:
        self._client_code = code
        if not self.closing:
            # RFC 6455 5.5.1: answer with a close frame, echoing the code; then the server
            # closes the TCP connection first (7.1.1).
            self.closing = True
            self.session.closed = True
            echoed = ws.NORMAL if code == ws.NO_STATUS else code
            self._write_transport(close_frame(echoed))
        self._finish()

    def _fail(self, code: int, reason: str) -> None:
        """RFC 6455 7.1.7: close with ``code`` (1002, 1007, 1009) and drop the socket."""
        if not self.closing:
            self.closing = True
            self.session.closed = True
            self.closed_with = (code, reason)
            self.counters.count_close(code)
            self._write_transport(close_frame(code, reason))
        self._finish()

    def _closed(self, code: int, reason: str) -> None:
        """The server's close: send the frame, wait for the client's (or the timeout)."""
        self.closed_with = (code, reason)
        self._write_transport(close_frame(code, reason))
        self._await_close()

    def _finish(self) -> None:
        """Both close frames are sent: close the socket (after what is queued)."""
        self.transport.close()
        self._await_close()

    def _await_close(self) -> None:
        if self._gone is not None:
            return
        self._gone = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._close_within(self._gone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(report_failure)

    async def _close_within(self, gone: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(gone, CLOSE_HANDSHAKE_TIMEOUT)
        except TimeoutError:
            self.transport.abort()  # the client never answered, or never read the rest

    def _detach(self) -> None:
        task = asyncio.ensure_future(self._ended())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(report_failure)

    async def _ended(self) -> None:
        # The "ended" line and the node's "closed" line are written in one step, in order.
        if trace.isEnabledFor(logging.DEBUG):
            self._log_end()
        code = self._client_code if self._client_code is not None else ABNORMAL
        await self._node.detach(self, code)

    def _log_end(self) -> None:
        if self.closed_with is not None:
            sent, why = self.closed_with
            trace.debug(
                "connection %s ended: closed by the server, code %s (%s)",
                self.socket_id,
                sent,
                why,
            )
        else:
            trace.debug(
                "connection %s ended: closed by the client, code %s",
                self.socket_id,
                self._client_code,
            )


class EchoConnection(ProtocolConnection):
    """``/conformance/echo`` on this protocol: every message straight back (Autobahn)."""

    __slots__ = ()

    def _handle(self, events: list[ws.Event]) -> None:
        for event in events:
            match event:
                case ws.Text(data=text):
                    if not self.closing:
                        self._write_transport(text_frame(text.encode()))
                case ws.Binary(data=data):
                    if not self.closing:
                        self._write_transport(binary_frame(data))
                case _:
                    super()._handle([event])


def switch_protocols(
    transport: asyncio.Transport,
    websocket_key: str,
    connect: Callable[[asyncio.Transport], ProtocolConnection],
    guard: ConnectionGuard | None,
    predecessor: object,
) -> ProtocolConnection:
    """Answer a validated upgrade with 101 and move ``transport`` to the connection
    ``connect`` builds; the guard counts it in ``predecessor``'s place (aiohttp's request
    handler, or the lean connection that read the request) until it closes. The caller
    frees ``predecessor``, feeds the connection what followed the request, and attaches it.

    The 101 is written with the connection's first frame (``pusher:connection_established``
    from ``node.attach``, or a reply to an early frame): one ``send()`` instead of two per
    connect. Nothing reaches the socket but through ``_write_transport`` before that frame
    (the fan-out writes only to subscribers, and a subscription follows it). The caller
    calls :meth:`ProtocolConnection.flush_head` once the connection is attached, for a
    connection that sends nothing first (the conformance echo)."""
    connection = connect(transport)
    connection._head = switching_protocols(websocket_key)  # noqa: SLF001 - its own module
    transport.set_protocol(connection)
    if guard is not None:
        guard.hand_over(predecessor, connection)
        connection._guard = guard  # noqa: SLF001 - the guard hears of its close
    return connection


def take_over(
    request: web.Request, connect: Callable[[asyncio.Transport], ProtocolConnection]
) -> ProtocolConnection:
    """Answer the (validated) upgrade request with 101 and move its socket to the
    connection ``connect`` builds; aiohttp's handler then ends without touching the socket.

    Call it only after ``WebSocketResponse.can_prepare(request)`` said yes: that checked the
    version, the key and the Upgrade and Connection headers."""
    # uvloop's transports implement asyncio.Transport without subclassing it.
    transport = cast(asyncio.Transport, request.transport)
    handler = request.protocol
    # Frames a client sent before it read our 101 (RFC 6455 forbids it; be lenient): aiohttp
    # keeps them for the WebSocket reader it would have made.
    early: bytes = getattr(handler, "_message_tail", b"")
    key = request.headers["Sec-WebSocket-Key"]
    connection = switch_protocols(transport, key, connect, request.app.get(GUARD), handler)
    # To aiohttp the connection is now lost: its handler leaves aiohttp's connection table
    # (and is freed with the request), and, its transport gone, the response the request
    # handler returns is never written (aiohttp takes that for a client disconnect).
    handler.transport = None  # connection_lost must not close what is now ours
    handler.connection_lost(None)
    if early:
        connection.data_received(early)
    return connection
