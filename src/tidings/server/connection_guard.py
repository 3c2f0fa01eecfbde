"""Slow and greedy HTTP clients, cut at the connection level (core/admission.py decides).

aiohttp bounds neither the time a client takes to send its headers nor its body: a
client that sends a header line every 20 s holds a connection (and a file descriptor)
for as long as it likes. This edge feeds aiohttp's connection events into
:class:`~tidings.core.admission.Admission` and closes what it returns:

- accept: ``GuardedServer.connection_made`` (per-address limit, pending cap);
- headers complete: the request handler wrapper, before the application sees the request;
- body complete: the body stream's end-of-file callback;
- closed: ``GuardedServer.connection_lost``;
- deadlines: one periodic sweep for all connections, not a timer per connection.

An established WebSocket never passes through here again: its frames go straight to
its reader, untouched. When our own WebSocket protocol takes the socket over from aiohttp
(server/websocket_protocol.py), :meth:`ConnectionGuard.hand_over` keeps it counted under
its address until it closes, so aiohttp's request handler can be freed.

A lean connection (server/lean_http.py, the hot REST endpoints without aiohttp) reports the
same events itself (``accepted``, ``headers_complete``, ``body_complete``, ``lost``, and
``awaiting_headers`` when a later request on it begins); when it hands its socket to
aiohttp, :meth:`GuardedServer.take_back` counts aiohttp's handler in its place, and when it
upgrades the socket to a WebSocket itself, :meth:`ConnectionGuard.hand_over` counts the
WebSocket in its place, as for aiohttp's handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tidings.core.admission import Admission, AdmissionLimits, Cut
from tidings.core.client_address import TrustedProxies, normalize, parse_networks
from tidings.server.rest import error_response

log = logging.getLogger("tidings.server.guard")

AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@runtime_checkable
class GuardedConnection(Protocol):
    """What the guard closes: aiohttp's request handler, or a lean connection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    def force_close(self) -> None: ...


# A lean front for the listener (server/lean_http.py): the protocol of each new connection,
# which hands it to the server's aiohttp handler when it is not its own.
Front = Callable[["GuardedServer"], asyncio.Protocol]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """From config.Settings (``request_header_timeout``, ``request_body_timeout``,
    ``max_pending_connections``, ``max_connections_per_ip``, ``trusted_proxies``,
    ``client_ip_header``), where the defaults and their reasons are."""

    header_timeout: float
    body_timeout: float
    max_pending: int
    max_per_address: int  # 0: no limit
    trusted_proxies: tuple[str, ...]
    client_ip_header: str


class ConnectionGuard:
    """Tracks this process's HTTP connections until their first request is complete."""

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings
        # Keys: aiohttp's request handlers, and the WebSocket connections handed over.
        self.admission: Admission[object] = Admission(
            AdmissionLimits(
                header_timeout=settings.header_timeout,
                body_timeout=settings.body_timeout,
                max_pending=settings.max_pending,
                max_per_address=settings.max_per_address,
            )
        )
        self.proxies = TrustedProxies(parse_networks(settings.trusted_proxies))
        # Connections from a trusted proxy, counted under the client each request names.
        # Only filled when there is a per-address limit to count for.
        self._proxied: dict[object, str] = {}
        # A deadline is checked at most this late: a quarter of the shorter timeout, and
        # at least once a second.
        self.sweep_interval = min(1.0, settings.header_timeout / 4, settings.body_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def runner(
        self, application: web.Application, front: Front | None = None, **kwargs: object
    ) -> web.AppRunner:
        """An AppRunner whose connections go through this guard (and start on ``front``'s
        protocol, when given)."""
        return GuardedRunner(application, self, front, **kwargs)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(self.sweep_interval, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- aiohttp's connection events ------------------------------------------------------

    def accepted(self, conn: GuardedConnection, transport: asyncio.Transport) -> str | None:
        """A new connection (aiohttp's request handler or a lean one). Returns the address
        of the trusted proxy it comes from when its requests must name their client
        (:meth:`admit_forwarded`), else None."""
        peer = transport.get_extra_info("peername")
        address = normalize(peer[0]) if isinstance(peer, tuple) and peer else None
        counted = address
        proxy = None
        if address is not None and self.proxies and self.proxies.trusts(address):
            counted = None  # its clients are counted when their requests name them
            if self.admission.limits.max_per_address:
                self._proxied[conn] = proxy = address
        for cut, reason in self.admission.accepted(conn, counted, self._now()):
            self._cut(cut, reason)
        return proxy

    def lost(self, handler: object) -> None:
        self.admission.lost(handler)
        self._proxied.pop(handler, None)

    # -- a lean connection's requests (server/lean_http.py) ------------------------------

    def headers_complete(self, conn: object, body_complete: bool) -> None:
        self.admission.request_started(conn, self._now(), body_complete)

    def body_complete(self, conn: object) -> None:
        self.admission.body_complete(conn)

    def awaiting_headers(self, conn: object) -> None:
        """A later request on a kept-alive connection has begun: its headers are due too."""
        self.admission.awaiting_headers(conn, self._now())

    def handed_back(self, lean: object, handler: RequestHandler) -> None:
        """A lean connection's socket now belongs to aiohttp's ``handler``, whose current
        request's headers are due within the header timeout."""
        self.admission.hand_over(lean, handler)
        self.admission.awaiting_headers(handler, self._now())
        proxy = self._proxied.pop(lean, None)
        if proxy is not None:
            self._proxied[handler] = proxy

    def admit_forwarded(self, conn: object, proxy: str, forwarded: str) -> bool:
        """Count a trusted proxy's connection under the client ``forwarded`` (the client IP
        header) names; False, and counted under nobody, when that client is over the
        per-address limit (the caller answers 429 and closes)."""
        client = self.proxies.client(proxy, forwarded)
        if self.admission.readdress(conn, client):
            return True
        del self._proxied[conn]  # answered and closed: counted under nobody
        log.debug("HTTP connection refused: %s is over max_connections_per_ip", client)
        return False

    def hand_over(self, conn: object, successor: object) -> None:
        """The socket of ``conn`` (aiohttp's request handler, or a lean connection that
        upgraded it itself) now belongs to ``successor``, a WebSocket whose headers are
        complete: it stays counted under its address; call :meth:`lost` with
        ``successor`` when the socket closes."""
        self.admission.hand_over(conn, successor)
        self._proxied.pop(conn, None)

    def wrap(self, handle: AppHandler) -> AppHandler:
        """The application's request handler, told first that a request's headers are
        complete. A plain function returning the application's coroutine: no frame of
        its own stays on a WebSocket's stack for the life of the connection."""

        def guarded(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            protocol = request.protocol
            body = request.content
            complete = body.is_eof()
            self.admission.request_started(protocol, self._now(), complete)
            if not complete:
                body.on_eof(functools.partial(self.admission.body_complete, protocol))
            proxy = self._proxied.get(protocol)
            if proxy is not None and not self._admit_forwarded(request, protocol, proxy):
                return self._too_many()
            return handle(request)

        return guarded

    # -- internals ------------------------------------------------------------------------

    def _admit_forwarded(
        self, request: web.BaseRequest, protocol: RequestHandler, proxy: str
    ) -> bool:
        forwarded = ",".join(request.headers.getall(self.settings.client_ip_header, ()))
        return self.admit_forwarded(protocol, proxy, forwarded)

    async def _too_many(self) -> web.StreamResponse:
        # Pusher's HTTP API answers rate limits with 429 and a JSON error; so does this,
        # before any upgrade, and the connection is closed after it.
        response = error_response(429, "too many connections from this address")
        response.force_close()
        return response

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else asyncio.get_running_loop().time()

    def _sweep(self) -> None:
        assert self._loop is not None
        try:
            for conn, reason in self.admission.expired(self._loop.time()):
                self._cut(conn, reason)
        finally:
            self._sweeper = self._loop.call_later(self.sweep_interval, self._sweep)

    def _cut(self, handler: object, reason: Cut) -> None:
        # Only pending connections are cut, and a handed-over WebSocket is never pending:
        # an aiohttp request handler or a lean connection.
        assert isinstance(handler, GuardedConnection)
        if log.isEnabledFor(logging.DEBUG):
            peer = handler.transport.get_extra_info("peername") if handler.transport else None
            address = peer[0] if isinstance(peer, tuple) and peer else "?"
            log.debug("HTTP connection from %s closed: %s", address, reason)
        try:
            handler.force_close()
        except Exception:  # one connection's failure never stops the sweep
            log.exception("closing a connection (%s) failed", reason)


GUARD = web.AppKey("connection_guard", ConnectionGuard)  # set by the server that has one


class GuardedServer(web.Server):
    """aiohttp's low-level server, reporting accepts and closes to the guard. With a
    ``front``, each new connection starts on the front's protocol, which gives it back
    (:meth:`take_back`) when a request is not its own."""

    def __init__(self, made: web.Server, guard: ConnectionGuard, front: Front | None) -> None:
        super().__init__(
            guard.wrap(made.request_handler),
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,  # noqa: SLF001 - the keyword arguments AppRunner gave it
        )
        self.guard = guard
        self.front = front
        self._taking_back: object | None = None

    def __call__(self) -> RequestHandler:
        # The listener's protocol factory: a front protocol, when there is one.
        if self.front is not None:
            return self.front(self)  # type: ignore[return-value]  # any asyncio.Protocol
        return super().__call__()

    def take_back(self, front: object, transport: asyncio.Transport) -> RequestHandler:
        """``front``'s connection becomes an aiohttp one: a request handler on
        ``transport``, counted by the guard in ``front``'s place. The caller feeds it the
        bytes ``front`` read and did not consume."""
        handler = super().__call__()
        transport.set_protocol(handler)
        self._taking_back = front
        try:
            handler.connection_made(transport)
        finally:
            self._taking_back = None
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self._taking_back is not None:
            self.guard.handed_back(self._taking_back, handler)
        else:
            self.guard.accepted(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.guard.lost(handler)


class GuardedRunner(web.AppRunner):
    """AppRunner serving through a :class:`GuardedServer`."""

    __slots__ = ("_guard", "_front")

    def __init__(
        self,
        application: web.Application,
        guard: ConnectionGuard,
        front: Front | None,
        **kwargs: object,
    ) -> None:
        super().__init__(application, **kwargs)  # type: ignore[arg-type]
        self._guard = guard
        self._front = front

    async def _make_server(self) -> web.Server:
        # AppRunner starts the application up and builds aiohttp's server; rebuild it with
        # the same arguments as a GuardedServer.
        return GuardedServer(await super()._make_server(), self._guard, self._front)
