"""One ASGI app for Tidings' paths, in front of (or without) the developer's own app.

:class:`TidingsASGI` takes the Pusher paths and hands everything else to the wrapped app:

- a WebSocket on ``/app/{key}`` (any WebSocket under ``/app``) is a Pusher socket;
- HTTP under ``/apps/`` and ``/users/`` (the REST API) and under ``http_path`` (the HTTP
  fallbacks) goes to the HTTP edge (:class:`tidings.asgi.http.AsgiHttp`);
- any other scope goes to the wrapped app, or is answered 404 when there is none.

Lifespan is Tidings' first: on startup Tidings starts, then the wrapped app; on shutdown
the wrapped app stops, then Tidings stops. Where no lifespan comes (Django's
``get_asgi_application()``, a mounted app, ``--lifespan off``), Tidings starts on the
first scope, once, and nothing stops it.

Stopping drains as ``tidings serve`` does, before the server's own shutdown: servers send
``lifespan.shutdown`` only once every connection has ended (uvicorn closes WebSockets with
1012 and waits for ``xhr_streaming`` responses without end), so Tidings starts its drain
from SIGTERM and SIGINT (:mod:`tidings.asgi.shutdown`). Once started, in the main thread,
it stands in front of the server's handlers for these signals; a signal then drains:
``shutdown_ready_delay`` seconds in which everything keeps working (load balancers and
Kubernetes endpoints take the node out), 4200 to every socket and fallback session
(pusher-js reconnects at once, elsewhere), streams end, polling clients get up to 2 s to
collect their close; then it waits (up to ``shutdown_timeout``) for Tidings' requests to
end, and hands the signal to the server, whose shutdown and lifespan shutdown follow. A
second signal cuts the drain short and reaches the server at once. This works under
uvicorn (also with ``--workers`` and ``--reload``, whose workers get the signal) and under
hypercorn ``--workers 0``, where hypercorn's shutdown starts with the drain and waits
``--graceful-timeout`` (3 s by default: keep it above ``shutdown_ready_delay`` + 2) for
it. hypercorn's default worker process never gets the signal (only its supervisor does):
its clients are cut when ``--graceful-timeout`` runs out. ``rt.asgi(app,
handle_signals=False)`` leaves the signals to the server alone: clients then get the
server's close (uvicorn: 1012), and an open ``xhr_streaming`` response holds uvicorn's
shutdown until ``--timeout-graceful-shutdown``.

Paths are read relative to the mount point (``route_path``: ``root_path`` cut off ``path``
when it is there, as from Starlette 0.33, and not when it is not, as before):
``app.mount("/rt", rt.asgi())`` in Starlette serves pusher-js configured with
``wsPath: "/rt"`` and ``httpPath: "/rt/pusher"`` (the mount, then ``http_path``).

Serve with ``--ws-per-message-deflate false`` (uvicorn): browsers offer compression, and
with it every recipient compresses the same message again, which doubles the cost of each
delivery (hypercorn accepts compression whenever a client offers it, with no switch).

Several worker processes need a shared broker (``broker="redis://…"``): in memory each
worker would be a separate server whose clients never see the others' events. Tidings
refuses to start in memory mode when it can tell it is one of several workers
(:func:`check_workers`). The native fan-out writer sends straight to the sockets of the
standalone server (``tidings serve``) only: ASGI sockets have no file descriptor, so every
delivery goes through the ASGI server's ``send``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from tidings.asgi.http import AsgiHttp, route_path
from tidings.asgi.shutdown import SignalDrain
from tidings.asgi.websocket import Message, Receive, Scope, Send, WebSocketEndpoint
from tidings.config import Settings
from tidings.lifecycle import Lifecycle

log = logging.getLogger("tidings.asgi")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SOCKET_PATH = "/app"


class Runtime(Protocol):
    """What the ASGI app needs of the Tidings it serves (a :class:`tidings.Realtime`).

    Its ``lifecycle`` (node and settings) exists from construction; the ASGI app adds its
    two edges (WebSocket, HTTP) to it once started, so that a drain and stop include them.
    Any writer serves ASGI sockets (see :class:`~tidings.asgi.websocket.AsgiConnection`).
    ``start()`` runs on the server's event loop (the loop the node serves sockets on), and
    only when not ``running`` (the developer may have started it, or another ``rt.asgi()``
    app). ``stop()`` drains (every socket gets 4200) and stops the lifecycle; it does
    nothing when not running.
    """

    @property
    def running(self) -> bool: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def socket_key(path: str) -> str | None:
    """The app key of ``/app/{key}``, or None for any other path under /app."""
    key = path[len(SOCKET_PATH) + 1 :] if path.startswith(SOCKET_PATH + "/") else ""
    return key if key and "/" not in key else None


def is_socket_path(path: str) -> bool:
    return path == SOCKET_PATH or path.startswith(SOCKET_PATH + "/")


class MultipleWorkersError(RuntimeError):
    """Several worker processes with the in-memory broker: each would be a separate server."""


SUPERVISORS = ("uvicorn", "gunicorn", "hypercorn")


def worker_count() -> int:
    """How many worker processes this process is one of, as far as can be told.

    Read from ``WEB_CONCURRENCY`` (uvicorn's and gunicorn's default worker count) and from
    the command line of the parent process when it is a server's supervisor (``uvicorn
    --workers N``, ``gunicorn -w N``, ``hypercorn -w N``). A count set in a config file
    (gunicorn.conf.py) cannot be seen: 1 then.
    """
    counts = [_count(os.environ.get("WEB_CONCURRENCY", ""))]
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
    except OSError:  # not Linux, or no parent to read
        args = []
    supervised = any(name in arg for arg in args[:3] for name in SUPERVISORS)
    # uvicorn's reloader runs one worker whatever --workers says.
    if supervised and "--reload" not in args:
        for at, arg in enumerate(args):
            if arg in ("--workers", "-w") and at + 1 < len(args):
                counts.append(_count(args[at + 1]))
            elif arg.startswith("--workers="):
                counts.append(_count(arg.partition("=")[2]))
            elif arg.startswith("-w") and arg[2:].isdigit():  # gunicorn -w4
                counts.append(_count(arg[2:]))
    return max(counts)


def _count(text: str) -> int:
    return int(text) if text.isdigit() else 1


def check_workers(settings: Settings) -> None:
    """Refuse to start in memory mode in one of several workers."""
    if settings.redis is not None:
        return
    workers = worker_count()
    if workers > 1:
        raise MultipleWorkersError(
            f"{workers} worker processes need a shared broker: in memory each worker is a "
            "separate server whose clients never see the others' events. Pass "
            'broker="redis://HOST:PORT/0", or run one worker.'
        )


@dataclass(frozen=True, slots=True)
class _Edges:
    """What serves Tidings' scopes once it runs."""

    websocket: WebSocketEndpoint
    http: AsgiHttp


class _OpenScopes:
    """Tidings' scopes being served (sockets, streams, polls, REST requests), so that a
    drain can wait for them to end."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __enter__(self) -> None:
        self.count += 1
        self._none.clear()

    def __exit__(self, *exc_info: object) -> None:
        self.count -= 1
        if not self.count:
            self._none.set()

    async def ended(self, timeout: float) -> bool:
        """Until none is open; False if some still were after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._none.wait(), timeout)
        except TimeoutError:
            return False
        return True


class TidingsASGI:
    """An ASGI 3 app: Tidings' paths, and ``other`` (if any) for everything else.

    ``handle_signals``: drain on SIGTERM/SIGINT before the server shuts down (see the
    module); False leaves the signals to the server alone."""

    def __init__(
        self, runtime: Runtime, other: ASGIApp | None = None, *, handle_signals: bool = True
    ) -> None:
        self.runtime = runtime
        self.other = other
        self.handle_signals = handle_signals
        self._edges: _Edges | None = None
        self._start_lock = asyncio.Lock()
        self._open = _OpenScopes()
        self._signals: SignalDrain | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        edges = self._edges or await self._start_once()
        path = route_path(scope)
        if kind == "websocket" and is_socket_path(path):
            with self._open:
                await edges.websocket(scope, receive, send, socket_key(path))
        elif kind == "http" and edges.http.handles(path):
            with self._open:
                await edges.http(scope, receive, send)
        elif self.other is not None:
            await self.other(scope, receive, send)
        else:
            await _not_found(scope, send)

    # -- start and stop ----------------------------------------------------------------------

    async def _start_once(self) -> _Edges:
        """Start Tidings unless it runs already, and add this app's edges to its lifecycle
        (a lock keeps concurrent scopes to one start)."""
        async with self._start_lock:
            if self._edges is None:
                lifecycle = self.runtime.lifecycle
                settings = lifecycle.settings
                check_workers(settings)
                if not self.runtime.running:
                    await self.runtime.start()
                edges = _Edges(
                    WebSocketEndpoint(lifecycle.node, settings.max_write_buffer),
                    AsgiHttp(lifecycle.node, settings),
                )
                await lifecycle.add(edges.websocket)
                await lifecycle.add(edges.http)
                self._edges = edges
                if self.handle_signals:
                    self._chain_signals()
            return self._edges

    def _chain_signals(self) -> None:
        signals = SignalDrain(self._drain_before_server, self.runtime.lifecycle.hurry)
        if signals.install():
            self._signals = signals

    async def _drain_before_server(self) -> None:
        """On SIGTERM/SIGINT, before the server hears of it: drain (every socket and
        fallback session told 4200, streams ended), then wait for Tidings' scopes to end,
        so that the server's own shutdown finds none of them open."""
        lifecycle = self.runtime.lifecycle
        await lifecycle.drain()
        timeout = lifecycle.settings.shutdown_timeout
        if not await self._open.ended(timeout):
            log.warning("%d Tidings requests still open after %g s", self._open.count, timeout)

    async def _stop(self) -> None:
        """Drain and stop Tidings, this app's edges included (once)."""
        edges, self._edges = self._edges, None
        if self._signals is not None:
            self._signals.uninstall()
            self._signals = None
        if edges is not None:
            await self.runtime.stop()

    # -- lifespan ----------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.other is None:
            await self._own_lifespan(receive, send)
            return
        forwarded = _ForwardedLifespan(self, receive, send)
        try:
            await self.other(scope, forwarded.receive, forwarded.send)
        except Exception:
            if forwarded.started:
                raise
            log.debug("the wrapped app does not do lifespan: Tidings handles it alone")
        if not forwarded.started:
            await self._own_lifespan(receive, send)

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start_once()
                except Exception as exc:
                    log.exception("Tidings failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _ForwardedLifespan:
    """The lifespan of the wrapped app, with Tidings' start before it and stop after it.

    Tidings starts when the server's ``lifespan.startup`` is received, before the wrapped
    app sees it; if it fails, the wrapped app's ``startup.complete`` is turned into
    ``startup.failed`` (the server then exits). Tidings stops when the wrapped app reports
    its shutdown done (or failed), before the server hears of it.
    """

    def __init__(self, tidings: TidingsASGI, receive: Receive, send: Send) -> None:
        self._tidings = tidings
        self._receive = receive
        self._send = send
        self.started = False  # whether the wrapped app received lifespan.startup
        self._failure: Exception | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "lifespan.startup":
            self.started = True
            try:
                await self._tidings._start_once()  # noqa: SLF001
            except Exception as exc:
                log.exception("Tidings failed to start")
                self._failure = exc
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and self._failure is not None:
            message = {"type": "lifespan.startup.failed", "message": str(self._failure)}
        elif kind == "lifespan.startup.failed":
            await self._tidings._stop()  # noqa: SLF001  no shutdown will come
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await self._tidings._stop()  # noqa: SLF001
        await self._send(message)


async def _not_found(scope: Scope, send: Send) -> None:
    """404 with a JSON error; a WebSocket is refused (403) unless the server can answer it
    with HTTP (the ASGI ``websocket.http.response`` extension)."""
    body = orjson.dumps({"error": "Not found"})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1000})
