"""The WebSocket edge: ``/app/{key}``. Bytes in, node, bytes out.

Outbound frames are written straight to the transport (never ``await ws.send`` in a
loop over subscribers); a connection whose unsent buffer passes the high-water mark is
a slow consumer and is closed with 4100 so it never slows the others.

What reads the socket after the handshake is the ``websocket_engine`` setting: by default
our own protocol (``server/websocket_protocol.py``, no aiohttp object or task per idle
socket), or aiohttp's WebSocket reader in :meth:`WebSocketEndpoint.handle`'s loop. Both share
:class:`WebSocketConnection`'s writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, cast

from aiohttp import WebSocketError, WSMsgType, web

from tidings.core.apps import App
from tidings.core.connection import SLOW_CONSUMER, ConnectionBase
from tidings.core.hub import Coalescer
from tidings.core.publication import Publication
from tidings.node import AppCounters, Node
from tidings.protocol import messages
from tidings.protocol.errors import MESSAGES, ErrorCode
from tidings.protocol.frames import close_frame, close_reason, text_frame
from tidings.protocol.session import Session
from tidings.server.fanout import Sink, socket_fd
from tidings.tasks import report_failure

if TYPE_CHECKING:
    from tidings.server.websocket_protocol import ProtocolConnection

log = logging.getLogger("tidings.websocket")
trace = logging.getLogger("tidings.debug")  # what clients do (`--debug`), see node.py

CLOSE_HANDSHAKE_TIMEOUT = 2.0
SLOW_CONSUMER_GRACE = 5.0  # seconds to read what is queued (and the 4100) before the drop


class WebSocketConnection(Sink, ConnectionBase):
    """One client socket; implements the node's ``Connection``.

    As a :class:`~tidings.server.fanout.Sink` it carries what the fan-out writer needs
    (``fd``, ``transport``, ``high_water``, ``closing``), so a publication reaches it with
    no Python call at all; only messages for this socket alone go through ``send``, framed
    here, so it counts their bytes (the Coalescer counts publications).
    """

    # ``closing`` is the Sink's; ConnectionBase adds no slots (see tidings.core.connection).
    __slots__ = (
        "counters",
        "_outgoing",
        "socket_id",
        "session",
        "app",
        "closed_with",
        "_ws",
        "_tasks",
    )

    def __init__(
        self,
        session: Session,
        app: App,
        ws: web.WebSocketResponse | None,
        transport: asyncio.Transport,
        high_water: int,
        tasks: set[asyncio.Task[None]],
        outgoing: Coalescer,
        counters: AppCounters,
    ) -> None:
        # Not super(): without the C build, Sink is a Python class with its own __init__.
        ConnectionBase.__init__(self, outgoing, counters)
        self.socket_id = session.socket_id
        self.session = session
        self.app = app
        self._ws = ws
        self.transport = transport
        self.fd = socket_fd(transport)
        self.high_water = high_water
        self._tasks = tasks
        # The code and reason the server closed it with, for the debug log (None: it did not).
        self.closed_with: tuple[int, str] | None = None

    def _write(self, message: bytes) -> None:
        """A message for this socket alone (replies, errors, member events)."""
        frame = text_frame(message)
        self.counters.bytes_out += len(frame)
        self.deliver(frame)

    def _publish(self, publication: Publication) -> None:
        """A publication from a writer other than the native one: its shared frame."""
        self.deliver(publication.frame)

    def deliver(self, frame: bytes) -> None:
        """A publication, from the fan-out writer (when it cannot write to ``fd`` itself)."""
        if self.closing or not self._write_transport(frame):
            return
        if self.transport.get_write_buffer_size() > self.high_water:
            self.slow_consumer()

    def _write_transport(self, data: bytes) -> bool:
        """Write to the transport unless it is closing; if it is, mark this connection
        closing (nothing more is written to it) and return False.

        The peer can vanish before aiohttp tells the handler: when a client process dies,
        every one of its sockets is closed in the same loop tick, and a member event for one
        is written to the others before any of them is detached. uvloop raises on a write to
        a closed transport; that must never climb out of a fan-out (and abort a detach).
        """
        transport = self.transport
        if not transport.is_closing():
            try:
                transport.write(data)
                return True
            except (RuntimeError, OSError):  # closed under us (uvloop: "handler is closed")
                pass
        self.closing = True
        return False

    def _closed(self, code: int, reason: str) -> None:
        """The closing handshake, in a task: aiohttp's ``close`` awaits the peer's reply."""
        self.closed_with = (code, reason)
        task = asyncio.ensure_future(self._close_handshake(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(report_failure)

    async def _close_handshake(self, code: int, reason: str) -> None:
        assert self._ws is not None  # ProtocolConnection closes without aiohttp's response
        try:
            await self._ws.close(code=code, message=close_reason(reason), drain=False)
        except Exception:  # the peer may already be gone
            self.transport.abort()

    def _drop_slow(self) -> None:
        """Write the 4100 past what is queued, and free the buffer after a grace period."""
        self.closed_with = (int(ErrorCode.OVER_CAPACITY), SLOW_CONSUMER)
        # The 4100 is the last frame this socket gets (``_write_transport`` ignores
        # ``closing``).
        if self._write_transport(close_frame(ErrorCode.OVER_CAPACITY, SLOW_CONSUMER)):
            transport = self.transport
            transport.close()
            asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE, transport.abort)
        log.warning("closed slow consumer %s (app %s)", self.socket_id, self.app.id)


async def _refuse(
    ws: web.WebSocketResponse, counters: AppCounters, code: ErrorCode, message: str | None = None
) -> None:
    text = message or MESSAGES[code]
    counters.count_error(code)
    counters.count_close(code)
    await ws.send_str(messages.error(text, code).decode())
    await ws.close(code=int(code), message=close_reason(text))


def connection_rate_exceeded() -> web.Response:
    """503 before any upgrade: the node is over max_connection_rate; try again in a second."""
    response = web.json_response(
        {"error": "Too many new connections; retry in a second"}, status=503
    )
    response.headers["Retry-After"] = "1"
    return response


class WebSocketEndpoint:
    """``/app/{key}``; ``engine`` reads the socket after the handshake: ``"tidings"``, our
    own protocol (server/websocket_protocol.py), or ``"aiohttp"``, its WebSocket reader."""

    def __init__(
        self, node: Node, max_write_buffer: int, engine: Literal["tidings", "aiohttp"] = "tidings"
    ) -> None:
        self.node = node
        self.max_write_buffer = max_write_buffer
        self.engine = engine
        self._tasks: set[asyncio.Task[None]] = set()

    def _response(self, max_msg_size: int) -> web.WebSocketResponse:
        # permessage-deflate off: every subscriber would compress the same bytes again.
        return web.WebSocketResponse(
            compress=False,
            max_msg_size=max_msg_size,
            autoping=True,
            timeout=CLOSE_HANDSHAKE_TIMEOUT,
        )

    async def bad_path(self, request: web.Request) -> web.StreamResponse:
        ws = self._response(4096)
        if not ws.can_prepare(request).ok:
            return _not_websocket()
        if not self.node.take_connection_slot(None):
            return connection_rate_exceeded()
        await ws.prepare(request)
        await _refuse(ws, self.node.unknown_app_counters, ErrorCode.PATH_NOT_FOUND)
        return ws

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app = self.node.apps.by_key(request.match_info["key"])
        # aiohttp refuses a message of exactly max_msg_size bytes; ours is an inclusive limit.
        ws = self._response(app.max_message_bytes + 1 if app else 4096)
        if not ws.can_prepare(request).ok:
            return _not_websocket()
        if not self.node.take_connection_slot(app):
            return connection_rate_exceeded()
        refusal = self._refusal(request, app)
        if refusal is None and app is not None and self.engine == "tidings":
            self._take_over(request, app)
            # aiohttp's attempt to send this response meets no socket (take_over).
            return web.Response()
        await ws.prepare(request)
        if refusal is not None or app is None:
            code, text = refusal or (ErrorCode.APP_NOT_FOUND, MESSAGES[ErrorCode.APP_NOT_FOUND])
            tap = self.node.tap(app.id) if app is not None else None
            if tap is not None:
                tap.refused(None, None, int(code), text)
            await _refuse(ws, self.node.counters_for(app), code, text)
            return ws
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, request.transport)
        if transport is None:
            return ws
        session = self.node.new_session(app)
        counters = self.node.counters(app)
        connection = WebSocketConnection(
            session,
            app,
            ws,
            transport,
            self.max_write_buffer,
            self._tasks,
            self.node.outgoing,
            counters,
        )
        self.node.attach(connection)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self.node.receive(connection, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    # Pusher: "Binary WebSocket frames are not supported."
                    counters.count_error(None)
                    connection.send(messages.error("binary frames are not supported"))
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp closed it: 1009 (over max_message_bytes), 1002, 1007...
                    if isinstance(msg.data, WebSocketError):
                        counters.count_close(msg.data.code)
                        connection.closed_with = (msg.data.code, str(msg.data))
                    break
        except Exception:
            log.exception("connection %s failed", connection.socket_id)
        finally:
            if trace.isEnabledFor(logging.DEBUG):
                if connection.closed_with is not None:
                    sent, why = connection.closed_with
                    trace.debug(
                        "connection %s ended: closed by the server, code %s (%s)",
                        connection.socket_id,
                        sent,
                        why,
                    )
                else:
                    trace.debug(
                        "connection %s ended: closed by the client, code %s",
                        connection.socket_id,
                        ws.close_code,
                    )
            await self.node.detach(connection, ws.close_code)
        return ws

    def _take_over(self, request: web.Request, app: App) -> None:
        # Imported here: websocket_protocol builds on this module's WebSocketConnection.
        from tidings.server.websocket_protocol import take_over

        connection = take_over(request, self.connector(app))
        self.node.attach(connection)
        connection.flush_head()

    def connector(self, app: App) -> Callable[[asyncio.Transport], ProtocolConnection]:
        """What builds the connection of an admitted upgrade to ``app`` on our engine
        (:meth:`handle`'s, and the lean front's: server/lean_http.py)."""
        from tidings.server.websocket_protocol import ProtocolConnection

        node = self.node

        def connect(transport: asyncio.Transport) -> ProtocolConnection:
            return ProtocolConnection(
                node,
                node.new_session(app),
                app,
                transport,
                self.max_write_buffer,
                self._tasks,
                node.outgoing,
                node.counters(app),
                app.max_message_bytes,
            )

        return connect

    def _refusal(self, request: web.Request, app: App | None) -> tuple[ErrorCode, str] | None:
        return self.node.admission(
            app, request.query.get("protocol"), request.headers.get("Origin")
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_HANDSHAKE_TIMEOUT + 1)


def _not_websocket() -> web.Response:
    return web.json_response({"error": "WebSocket upgrade expected"}, status=400)
