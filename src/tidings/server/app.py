"""The aiohttp edge: one server on one port for WebSocket, REST, fallbacks and health, and
``tidings serve``'s listener and signals around the one lifecycle (``tidings/lifecycle.py``).

SIGTERM or SIGINT drains, in this order: ``/ready`` turns 503 while everything else keeps
working for ``shutdown_ready_delay`` seconds, so load balancers stop routing here first;
then every socket and HTTP fallback session is closed with 4200 (clients reconnect, now
elsewhere; a polling client between two polls has up to CLOSE_HANDOVER seconds to collect
it on its keep-alive connection), the listener closes and in-flight REST requests finish (up to
``shutdown_timeout``), pending webhooks are written to their durable queue, and the
process exits 0. A second signal exits at once (status 1), except in a ``--workers`` worker,
where it is a copy of the same stop (``server/workers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from tidings.config import ConfigError, Settings
from tidings.console.routes import Console
from tidings.lifecycle import Lifecycle
from tidings.node import Node
from tidings.protocol import websocket as ws_frames
from tidings.server import fanout, tidings_js
from tidings.server.banner import client_hint
from tidings.server.connection_guard import GUARD, ConnectionGuard, GuardSettings
from tidings.server.fallback import FallbackSettings, HttpFallback
from tidings.server.health import Health
from tidings.server.http_edge import aiohttp_routes
from tidings.server.lean_http import LeanRest
from tidings.server.listening import listen_error
from tidings.server.metrics import CLIENT_CLOSED_REQUEST, Metrics
from tidings.server.rest import RestApi, error_response
from tidings.server.sse import SseEndpoint, SseSettings
from tidings.server.websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from tidings.realtime import Realtime

log = logging.getLogger("tidings.server")
trace = logging.getLogger("tidings.debug")  # what clients do (`--debug`), see node.py

R = TypeVar("R")
T = TypeVar("T")


class InFlight:
    """REST requests being handled, so that a stop can wait for them to finish.

    aiohttp's own shutdown stops reading from every connection, so a request whose body is
    still arriving would never complete: the stop closes the listener, waits here, and
    only then lets aiohttp shut down. (The ASGI edge tracks its REST requests here too.)
    """

    def __init__(self) -> None:
        self.count = 0
        # Made by the first wait(): until a stop waits, a request pays no Event.set().
        self._idle: asyncio.Event | None = None

    async def track(self, request: R, handler: Callable[[R], Awaitable[T]]) -> T:
        self.enter()
        try:
            return await handler(request)
        finally:
            self.leave()

    def enter(self) -> None:
        """A request begins (every ``enter`` is followed by one ``leave``)."""
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if not self.count and self._idle is not None:
            self._idle.set()

    async def wait(self, timeout: float) -> bool:
        """Until no request is in flight; False if some still were after ``timeout``."""
        if not self.count:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


WEBSOCKET = web.AppKey("websocket", WebSocketEndpoint)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
FALLBACK = web.AppKey("fallback", HttpFallback)
REST = web.AppKey("rest", RestApi)
CONSOLE = web.AppKey("console", Console)


REST_PATHS = ("/apps/", "/users/")  # the HTTP API (also the SDK's unprefixed terminate)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def edge_middleware(in_flight: InFlight, metrics: Metrics) -> Middleware:
    """The one middleware: REST requests are tracked (so a stop can wait for them) and timed;
    aiohttp's own 404/405/413 pages become JSON errors like every other; a client that
    goes away mid-request (an aborted upload) is a debug line, not an error with a
    traceback.

    One, not three: on the aiohttp engine a WebSocket keeps its request's middleware frames
    for its whole life, and every frame is memory per connection."""

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith(REST_PATHS):
                timed = functools.partial(metrics.observe, handler=handler)
                response = await in_flight.track(request, timed)
                if trace.isEnabledFor(logging.DEBUG):
                    trace.debug(
                        "REST %s %s from %s: %d %s",
                        request.method,
                        request.path,
                        request.remote,
                        response.status,
                        _error_text(response),
                    )
                return response
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason)
        except ConnectionError:
            if request.transport is not None and not request.transport.is_closing():
                raise  # not this client's connection: a real error
            log.debug(
                "client %s went away during %s %s", request.remote, request.method, request.path
            )
            # Never written: aiohttp finds the connection closed and drops the response.
            return web.Response(status=CLIENT_CLOSED_REQUEST)

    return edge


def _error_text(response: web.StreamResponse) -> str:
    """A REST error's JSON body, for the debug line (a 401 names the string to sign)."""
    if response.status < 400 or not isinstance(response, web.Response):
        return ""
    body = response.body
    return body.decode(errors="replace") if isinstance(body, bytes) else ""


def build_application(
    node: Node, settings: Settings, health: Health, metrics: Metrics
) -> web.Application:
    in_flight = InFlight()
    application = web.Application(
        middlewares=[edge_middleware(in_flight, metrics)],
        client_max_size=settings.max_request_body + 1,
    )
    application[IN_FLIGHT] = in_flight
    application.add_routes(metrics.routes())
    websocket = WebSocketEndpoint(node, settings.max_write_buffer, settings.websocket_engine)
    application[WEBSOCKET] = websocket
    application.add_routes(health.routes())
    rest = RestApi(node, settings.max_request_body)
    application[REST] = rest
    application.add_routes(rest.routes())
    application.add_routes(aiohttp_routes(tidings_js.endpoints()))
    fallback = HttpFallback(node, FallbackSettings.of(settings))
    application[FALLBACK] = fallback
    application.add_routes(fallback.routes())
    # Before /app/{key}/{tail}, which answers every other path under a key.
    application.add_routes(SseEndpoint(node, SseSettings.of(settings)).routes())
    application.add_routes(
        [
            web.get("/app/{key}", websocket.handle),
            web.get("/app", websocket.bad_path),
            web.get("/app/", websocket.bad_path),
            web.get("/app/{key}/{tail:.*}", websocket.bad_path),
        ]
    )
    if settings.console:
        console = Console(node, settings)
        application[CONSOLE] = console
        application.add_routes(console.routes())
    if settings.conformance:
        from tidings.server import conformance

        conformance.log_warning()
        application.add_routes(conformance.ConformanceEcho(websocket).routes())
    return application


def make_guard(settings: Settings) -> ConnectionGuard:
    return ConnectionGuard(
        GuardSettings(
            header_timeout=settings.request_header_timeout,
            body_timeout=settings.request_body_timeout,
            max_pending=settings.max_pending_connections,
            max_per_address=settings.max_connections_per_ip,
            trusted_proxies=settings.trusted_proxies,
            client_ip_header=settings.client_ip_header,
        )
    )


def tune_garbage_collector() -> None:
    """Keep full collections rare and short.

    Each connection brings ~60 GC-tracked objects (aiohttp's and asyncio's), so with the
    default thresholds opening 10,000 connections triggers several full collections,
    each freezing the loop for ~0.4 s (bench/fanout.py, docs/benchmarks.md). Objects from
    start-up never die: freeze them out of every collection, and collect young objects
    less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """wss:// and https:// on the same port when a certificate and key are configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class AiohttpServer:
    """The aiohttp edge (:class:`tidings.lifecycle.Edge`): WebSocket, HTTP fallback, REST,
    health and metrics on one listener, guarded against slow clients."""

    def __init__(self, lifecycle: Lifecycle, guard: ConnectionGuard) -> None:
        settings = lifecycle.settings
        self.settings = settings
        self.guard = guard
        metrics = lifecycle.metrics(guard.admission)
        self.application = build_application(lifecycle.node, settings, lifecycle.health, metrics)
        self.application[GUARD] = guard  # WebSockets taken over are handed over to it
        self.lean: LeanRest | None = None
        if settings.lean_rest:
            self.lean = LeanRest(
                self.application[REST],
                self.application[IN_FLIGHT],
                metrics,
                guard,
                settings.keepalive_timeout,
                # The upgrade to our own engine is answered on the lean path too.
                self.application[WEBSOCKET] if settings.websocket_engine == "tidings" else None,
            )
        self.runner = guard.runner(
            self.application,
            self.lean.connection if self.lean is not None else None,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=settings.shutdown_timeout,
            keepalive_timeout=settings.keepalive_timeout,
        )
        self.site: web.TCPSite | None = None
        self.sockets: list[socket.socket] = []  # once listening

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for ``port = 0``)."""
        return int(self.sockets[0].getsockname()[1])

    async def start(self) -> None:
        await self.application[FALLBACK].start()
        console = self.application.get(CONSOLE)
        if console is not None:
            await console.start()
        await self.runner.setup()

    async def listen(self) -> None:
        """Open the listener; raises ConfigError when it cannot (the port is taken)."""
        settings = self.settings
        site = web.TCPSite(
            self.runner,
            settings.host,
            settings.port,
            backlog=1024,
            reuse_port=settings.reuse_port or None,
            ssl_context=tls_context(settings),
        )
        try:
            await site.start()
        except OSError as exc:
            raise listen_error(settings.host, settings.port, exc) from None
        self.site = site
        self.guard.start()
        self.sockets = list(getattr(site._server, "sockets", None) or ())  # noqa: SLF001
        for sock in self.sockets:
            # SO_KEEPALIVE, which aiohttp's request handler sets on each connection it
            # serves: set once here, every accepted socket inherits it (Linux), those the
            # lean front upgrades to WebSockets without aiohttp included.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    async def stop_accepting(self) -> None:
        if self.site is not None:
            await self.site.stop()  # no new connections: reconnecting clients go elsewhere

    async def drain(self, grace: float) -> None:
        console = self.application.get(CONSOLE)
        if console is not None:
            await console.close()  # its streams end, or the stop would wait for them
        await self.application[WEBSOCKET].close()
        await self.application[FALLBACK].hand_over_closes(grace)

    async def close(self) -> None:
        await self.application[FALLBACK].close()
        console = self.application.get(CONSOLE)
        if console is not None:
            await console.close()
        timeout = self.settings.shutdown_timeout
        if not await self.application[IN_FLIGHT].wait(timeout):
            log.warning("REST requests still running after %g s", timeout)
        if self.lean is not None:
            self.lean.close()  # aiohttp's cleanup closes only the connections it holds
        await self.runner.cleanup()
        self.guard.close()


async def serve(settings: Settings, *, supervised: bool = False) -> int:
    """Run until SIGTERM/SIGINT, then drain and return the exit code.

    ``supervised`` is set in the workers of ``--workers N``: they ignore any signal after the
    first, which is a copy of the same stop (see ``server/workers.py``).
    """
    from tidings.realtime import Realtime

    return await Realtime.from_settings(settings).serve(supervised=supervised)


async def serve_realtime(realtime: Realtime, *, supervised: bool = False) -> int:
    """``Realtime.serve``: its lifecycle, with this listener and the signals that stop it."""
    # Before anything starts: a stop that comes right after "listening on" (or before it)
    # must drain, not meet Python's default handler (KeyboardInterrupt, a traceback).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set() and supervised:
            # A worker gets one stop twice (from the terminal or process group, and from
            # the supervisor); the supervisor alone decides when to cut a drain short.
            log.debug("received %s again: already draining", signal.Signals(signum).name)
            return
        if stop.is_set():
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    await realtime.start()
    try:
        server = await listen(realtime)
    except ConfigError:
        await realtime.lifecycle.stop()
        raise
    settings = realtime.settings
    keys = [app.key for app in realtime.node.apps]
    _log_listening(settings, server.sockets, keys, hint=not supervised)
    log.info("fan-out writer: %s", fanout.describe())
    log.info("WebSocket frame reader: %s", ws_frames.describe())

    tune_garbage_collector()
    await stop.wait()
    await realtime.stop()
    log.info("stopped")
    if supervised:
        # The supervisor's copy of the stop may still be on its way (a busy machine delays
        # it): once drained, a worker ignores it rather than die of it on its way out
        # (status -15), which the loop's default handlers would do once it closes.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)
    return 0


async def listen(realtime: Realtime) -> AiohttpServer:
    """Serve a started Realtime's clients on ``settings.host:port`` (WebSocket, REST,
    fallbacks, health, metrics): ``tidings serve`` without its signals. ``rt.stop()`` drains
    and closes it. Raises ConfigError when the port cannot be bound."""
    server = AiohttpServer(realtime.lifecycle, make_guard(realtime.settings))
    await realtime.lifecycle.add(server)
    await server.listen()
    return server


def _log_listening(
    settings: Settings, sockets: list[socket.socket], keys: list[str], hint: bool
) -> None:
    """The addresses listened on, and (``hint``) how to stop and how pusher-js connects:
    with --workers, the supervisor gives the hint once instead of each worker."""
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        family = "IPv6" if sock.family == socket.AF_INET6 else "IPv4"
        log.info(
            "listening on %s://%s:%s (%s), %d app(s)",
            "https" if settings.tls_cert else "http",
            host,
            port,
            family,
            len(keys),
        )
    if sockets and hint:
        port = sockets[0].getsockname()[1]
        log.info(
            "%s",
            client_hint(settings.host, port, bool(settings.tls_cert), keys, settings.http_path),
        )
