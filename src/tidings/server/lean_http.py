"""The lean path for the two hot REST endpoints (issue 18), publish without aiohttp, and for
the WebSocket upgrade that opens a connection.

Every accepted HTTP connection starts on a :class:`LeanConnection`, an ``asyncio.Protocol``
fed by the sans-I/O :class:`~tidings.protocol.http1.PublishFramer`. A signed
``POST /apps/{id}/events`` or ``/batch_events`` in its plain form is answered here, through
the very code aiohttp's route runs (:meth:`RestApi.answer_publish`: signature compared in
constant time, timestamp, body_md5, JSON checks, limits), timed in the same histogram,
tracked in the same :class:`InFlight` (a stop waits for it) and traced in the same debug
line. At the first byte of anything else the connection is handed to aiohttp for good
(:meth:`GuardedServer.take_back`): aiohttp's request handler gets the transport and every
byte not consumed yet, so fallbacks, /metrics, chunked bodies, the WebSocket upgrades not
taken here (below) and every malformed request meet exactly the server they always met.

The WebSocket upgrade: when the first request on a connection is the plain form of
``GET /app/{key}`` with an upgrade (see protocol/http1.py), the app exists, the handshake is
admissible (:meth:`Node.admission`: protocol version, origin, app enabled, not draining) and
a connection slot is free (``max_connection_rate``), the lean connection answers the 101
itself and moves the socket to a :class:`~tidings.server.websocket_protocol.ProtocolConnection`
through the code aiohttp's route ends in (:meth:`WebSocketEndpoint.connector`,
:func:`~tidings.server.websocket_protocol.switch_protocols`): the same 101, session,
``node.attach``, counters, console tap and debug lines. Anything else, every refusal
included, is handed to aiohttp, whose route answers it (400, 503, pusher:error 4001 ...).
Only with ``websocket_engine = "tidings"``, and never for a trusted proxy's connection.
(A py-spy of a connect storm: aiohttp's request, routing and middleware were ~45 % of the
server's CPU per connect; docs/benchmarks.md.)

Why: aiohttp's per-request machinery (parser, request and response objects, router,
middleware, handler task) cost more than the whole publish (bench/publish.py,
docs/benchmarks.md).

Ordering: one request is answered at a time (RFC 9112 9.3.2: in request order); bytes of
later pipelined requests wait in the framer, reading paused past a bound, and a hand-over
waits until the answer before it is written. The connection guard sees a lean connection as
it sees aiohttp's: counted per address from accept, cut if its headers or body are late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from aiohttp.http import SERVER_SOFTWARE

from tidings.protocol.http1 import (
    NEED_DATA,
    HandOver,
    Phase,
    PublishFramer,
    PublishRequest,
    UpgradeRequest,
)
from tidings.server.http_edge import JSON, HttpResponse, json_error
from tidings.server.metrics import CLIENT_CLOSED_REQUEST, NO_APP, Metrics
from tidings.server.rest import RestApi
from tidings.server.websocket_protocol import switch_protocols

if TYPE_CHECKING:
    from tidings.server.app import InFlight
    from tidings.server.connection_guard import ConnectionGuard, GuardedServer
    from tidings.server.websocket import WebSocketEndpoint

log = logging.getLogger("tidings.server.lean")
trace = logging.getLogger("tidings.debug")  # the REST line edge_middleware writes too

# The route patterns aiohttp's router reports, for the latency histogram's label.
ENDPOINTS = {
    "events": "/apps/{app_id}/events",
    "batch_events": "/apps/{app_id}/batch_events",
}
SERVER_HEADER = f"Server: {SERVER_SOFTWARE}\r\n".encode()
SERVER_HEADER_END = SERVER_HEADER + b"\r\n"
WRITE_HIGH_WATER = 64 * 1024  # unread answers past this pause reading (see pause_writing)


class HttpDate:
    """The ``Date`` header (RFC 9110 6.6.1), formatted once a second."""

    __slots__ = ("_second", "_line")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return self._line


_OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"


def response_bytes(response: HttpResponse, date: bytes, close: bool) -> bytes:
    """The answer as aiohttp writes it for these routes: status line, the handler's extra
    headers, Content-Type, Content-Length, Date, Server (and ``Connection: close``)."""
    status = response.status
    if status == 200 and not close and not response.headers and response.content_type == JSON:
        return b"".join((_OK_JSON % len(response.body), date, SERVER_HEADER_END, response.body))
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    head.extend(f"{name}: {value}\r\n".encode() for name, value in response.headers.items())
    if response.content_type is not None:
        head.append(f"Content-Type: {response.content_type}\r\n".encode())
    head.append(b"Content-Length: %d\r\n" % len(response.body))
    head.append(date)
    head.append(SERVER_HEADER)
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(response.body)
    return b"".join(head)


class LeanRest:
    """What the lean connections of one listener share."""

    def __init__(
        self,
        rest: RestApi,
        in_flight: InFlight,
        metrics: Metrics,
        guard: ConnectionGuard,
        keepalive_timeout: float,
        websocket: WebSocketEndpoint | None = None,
    ) -> None:
        self.rest = rest
        # Upgrades to /app/{key} answered here (None: all handed to aiohttp).
        self.websocket = websocket
        self.in_flight = in_flight
        self.metrics = metrics
        self.guard = guard
        self.keepalive_timeout = keepalive_timeout
        self.max_body = rest.max_request_body
        # Pipelined bytes held while a request is answered, past which reading pauses.
        self.max_buffered = rest.max_request_body + 16 * 1024
        self.date = HttpDate()
        self.connections: set[LeanConnection] = set()
        self.closing = False

    def connection(self, server: GuardedServer) -> LeanConnection:
        """The protocol for a new connection (the listener's factory, via ``server``)."""
        return LeanConnection(self, server)

    def close(self) -> None:
        """On stop: close every lean connection, each once its current answer is written."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_when_idle()

    def app_label(self, app_id: str) -> str:
        return app_id if self.rest.node.apps.by_id(app_id) is not None else NO_APP


class LeanConnection(asyncio.Protocol):
    """One client connection until it is closed or handed to aiohttp."""

    __slots__ = (
        "_lean",
        "_server",
        "_framer",
        "transport",
        "_remote",
        "_busy",
        "_pending",
        "_phase",
        "_close_after",
        "_reading_paused",
        "_writing_paused",
        "_last_active",
        "_keepalive",
        "_task",
        "_proxy",
        "_loop",
        "_body_since",
        "_in_flight",
    )

    def __init__(self, lean: LeanRest, server: GuardedServer) -> None:
        self._lean = lean
        self._server = server
        self._framer = PublishFramer(lean.max_body, upgrades=lean.websocket is not None)
        self.transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._busy = False  # a request is being answered
        self._pending = True  # the guard waits on this connection (headers or body)
        self._phase = Phase.IDLE
        self._close_after = False  # close once the current answer is written
        self._reading_paused = False
        self._writing_paused = False
        self._last_active = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._proxy: str | None = None  # a trusted proxy's address (per-client limits)
        self._loop = asyncio.get_running_loop()
        self._body_since = 0.0  # when the awaited body's headers were complete
        # Counted in InFlight: from the headers of a request until its answer (as aiohttp's
        # handlers are), so a stop waits for a body still arriving.
        self._in_flight = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) and peer else None
        lean = self._lean
        lean.connections.add(self)
        self._proxy = lean.guard.accepted(self, self.transport)
        self._last_active = self._loop.time()
        self._keepalive = self._loop.call_at(
            self._last_active + lean.keepalive_timeout, self._check_keepalive
        )

    def data_received(self, data: bytes) -> None:
        self._framer.receive(data)
        if self._busy or self._writing_paused:
            if self._framer.buffered > self._lean.max_buffered:
                self._pause_reading()
            return
        self._advance()

    def eof_received(self) -> bool | None:
        if self._busy:
            self._close_after = True
            return True  # keep the socket open to write the answer, then close it
        return None  # half a request can never complete: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        lean = self._lean
        lean.guard.lost(self)
        aborted = self._framer.awaited_body
        if self._in_flight and not self._busy:
            self._leave()
        if aborted is not None and not self._busy:
            # An upload cut (by the client, or the guard's body deadline): timed as the
            # aiohttp path times it, "client closed request".
            endpoint, app_id = aborted
            elapsed = self._loop.time() - self._body_since
            label = lean.app_label(app_id)
            lean.metrics.observe_rest(label, ENDPOINTS[endpoint], CLIENT_CLOSED_REQUEST, elapsed)
            log.debug("client %s went away during POST /apps/%s/%s", self._remote, app_id, endpoint)
        # A request being answered runs to its end, unanswered (aiohttp does not cancel its
        # handlers either): a batch is published whole or not at all.

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if not self._busy:
            self._advance()

    # -- the guard's and the stop's -------------------------------------------------------

    def force_close(self) -> None:
        """Cut by the connection guard (late headers or body, over a limit)."""
        if self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        if self._busy:
            self._close_after = True
        elif self.transport is not None:
            self.transport.close()

    # -- framing --------------------------------------------------------------------------

    def _advance(self) -> None:
        """Answer the next complete request, or hand over, or wait for more bytes."""
        framer = self._framer
        event = framer.next()
        if isinstance(event, PublishRequest):
            self._started(event)
        elif event is NEED_DATA:
            self._waiting(framer.phase)
        elif isinstance(event, UpgradeRequest):
            self._upgrade(event)
            return
        else:
            assert isinstance(event, HandOver)
            self._hand_over(event)
            return
        if self._reading_paused and framer.buffered <= self._lean.max_buffered:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _waiting(self, phase: Phase) -> None:
        """Tell the guard how far the next request is (it cuts it if it stays there)."""
        previous, self._phase = self._phase, phase
        if phase is previous:
            return
        guard = self._lean.guard
        if phase is Phase.BODY:
            self._body_since = self._loop.time()
            self._enter()
            guard.headers_complete(self, body_complete=False)
            self._pending = True
        elif phase is Phase.HEAD and not self._pending:
            guard.awaiting_headers(self)  # a keep-alive request arriving slowly
            self._pending = True

    def _started(self, request: PublishRequest) -> None:
        lean = self._lean
        if self._pending:
            if self._phase is Phase.BODY:
                lean.guard.body_complete(self)
            else:
                lean.guard.headers_complete(self, body_complete=True)
            self._pending = False
        self._phase = Phase.IDLE
        if self._proxy is not None and not self._admit_forwarded(request):
            return
        self._busy = True
        if lean.closing or not request.keep_alive:
            self._close_after = True
        self._task = self._loop.create_task(self._answer(request))

    def _admit_forwarded(self, request: PublishRequest) -> bool:
        """Behind a trusted proxy, count the connection under the client it names (the
        guard's per-address limit); over it, a 429 and the connection closed."""
        assert self._proxy is not None
        guard = self._lean.guard
        name = guard.settings.client_ip_header.lower()
        forwarded = ",".join(value for key, value in request.headers if key == name)
        if guard.admit_forwarded(self, self._proxy, forwarded):
            return True
        self._proxy = None
        self._write(json_error(429, "too many connections from this address"), close=True)
        self._close()
        return False

    async def _answer(self, request: PublishRequest) -> None:
        lean = self._lean
        started = time.perf_counter()
        status = 500
        self._enter()  # a stop waits for it (one frame less than InFlight.track)
        try:
            response = await lean.rest.answer_publish(request)
            status = response.status
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST  # as the aiohttp path counts it
            raise
        except Exception:
            # aiohttp would log it and answer a 500 too (as text); here the error is JSON.
            log.exception("REST POST %s failed", request.path)
            self._close_after = True
            response = json_error(500, "internal server error")
        finally:
            self._leave()
            lean.metrics.observe_rest(
                lean.app_label(request.app_id),
                ENDPOINTS[request.endpoint],
                status,
                time.perf_counter() - started,
            )
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(
                "REST POST %s from %s: %d %s",
                request.path,
                self._remote,
                status,
                response.body.decode(errors="replace") if status >= 400 else "",
            )
        self._write(response, close=self._close_after)
        self._busy = False
        self._task = None
        if self._close_after or self.transport is None or self.transport.is_closing():
            self._close()
            return
        self._last_active = self._loop.time()
        if not self._writing_paused:
            self._advance()

    def _enter(self) -> None:
        if not self._in_flight:
            self._in_flight = True
            self._lean.in_flight.enter()

    def _leave(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self._lean.in_flight.leave()

    def _write(self, response: HttpResponse, close: bool) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response_bytes(response, self._lean.date.line(), close))

    def _close(self) -> None:
        self._release()
        if self.transport is not None:
            self.transport.close()

    # -- the WebSocket upgrade ------------------------------------------------------------

    def _upgrade(self, request: UpgradeRequest) -> None:
        """Switch protocols here if the upgrade is admitted at once, else hand it to aiohttp
        (whose route then answers the refusal, as it always has)."""
        lean = self._lean
        websocket = lean.websocket
        transport = self.transport
        assert websocket is not None and transport is not None
        if transport.is_closing():
            return
        node = websocket.node
        app = node.apps.by_key(request.app_key)
        if (
            self._proxy is not None  # counted under the client it names: aiohttp's route
            or app is None
            or node.admission(app, request.protocol, request.origin) is not None
            # Uncounted: aiohttp's route asks again, and counts its 503.
            or not node.take_connection_slot(app, count_refusal=False)
        ):
            self._hand_over(HandOver("an upgrade not admitted here"))
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection from %s upgraded on the lean path", self._remote)
        self._release()
        self.transport = None  # the WebSocket's now (a stop or the guard must not close it)
        connection = switch_protocols(
            transport, request.websocket_key, websocket.connector(app), lean.guard, self
        )
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if request.early:
            connection.data_received(request.early)
        node.attach(connection)
        connection.flush_head()

    # -- hand-over and keep-alive ---------------------------------------------------------

    def _hand_over(self, event: HandOver) -> None:
        """From this byte on the connection is aiohttp's (nothing of ours is pending)."""
        transport = self.transport
        assert transport is not None and not self._busy
        if transport.is_closing():
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection from %s handed to aiohttp: %s", self._remote, event.reason)
        self._release()
        unread = self._framer.unconsumed()
        handler = self._server.take_back(self, transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if unread:
            handler.data_received(unread)

    def _release(self) -> None:
        """This object no longer serves the connection (closed or handed over)."""
        self._lean.connections.discard(self)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _check_keepalive(self) -> None:
        # One timer per connection, moved only when it fires (not per request): an idle
        # keep-alive connection is closed keepalive_timeout after its last answer.
        self._keepalive = None
        if self.transport is None or self.transport.is_closing():
            return
        loop = self._loop
        deadline = self._last_active + self._lean.keepalive_timeout
        idle = not self._busy and self._framer.phase is Phase.IDLE
        if idle and loop.time() >= deadline:
            self._close()
            return
        if not idle:
            deadline = loop.time() + self._lean.keepalive_timeout
        self._keepalive = loop.call_at(deadline, self._check_keepalive)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
