"""The REST API and pusher-js's HTTP fallbacks inside an ASGI app.

The handlers are the ones ``tidings serve`` runs (``server/rest.py``, ``server/fallback.py``),
written against ``server/http_edge.py``; this module only carries ASGI messages to them.
``xhr_streaming`` is one streaming response (``http.response.body`` with ``more_body``), and
a client that goes away is seen when ``receive()`` answers ``http.disconnect``.

As under aiohttp: REST requests are tracked in flight (a stop waits for them), timed into
``tidings_rest_request_seconds`` and traced on ``tidings.debug``; every error is JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from tidings.config import Settings
from tidings.node import Node
from tidings.server import tidings_js
from tidings.server.app import REST_PATHS, InFlight
from tidings.server.fallback import FallbackSettings, HttpFallback
from tidings.server.http_edge import HttpResponse, Match, Router, json_error, read_limited
from tidings.server.metrics import CLIENT_CLOSED_REQUEST, NO_APP, Metrics
from tidings.server.rest import RestApi
from tidings.tasks import spawn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("tidings.server")
trace = logging.getLogger("tidings.debug")  # what clients do (`--debug`), see node.py


class ClientDisconnected(ConnectionResetError):
    """The client went away (``http.disconnect``) while its request was read or answered."""


def route_path(scope: Scope) -> str:
    """The path below any mount point. Starlette before 0.33 strips the mount prefix from
    ``path``; from 0.33 (and uvicorn's ``--root-path``) ``path`` keeps it and ``root_path``
    names it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class AsgiRequest:
    """An ASGI HTTP scope and its body, as ``http_edge.HttpRequest``."""

    __slots__ = (
        "method",
        "path",
        "raw_path",
        "query",
        "headers",
        "remote",
        "params",
        "_read",
        "_more",
    )

    def __init__(self, scope: Scope, path: str, params: Mapping[str, str], receive: Receive):
        self.method: str = scope["method"]
        self.path = path
        self.raw_path = _raw_path(scope, path)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        self.query: MultiDictProxy[str] = MultiDictProxy(MultiDict(query))
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(
            CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        )
        client = scope.get("client")
        self.remote: str | None = client[0] if client else None
        self.params = params
        self._read = receive
        self._more = True  # more of the body may come

    @property
    def query_items(self) -> list[tuple[str, str]]:
        return list(self.query.items())

    async def read_body(self, limit: int) -> bytes | None:
        length = self.headers.get("Content-Length")
        declared = int(length) if length is not None and length.isdigit() else None
        return await read_limited(declared, self._chunk, limit)

    async def _chunk(self) -> bytes:
        """The next non-empty piece of the body, ``b""`` at its end (after which ``receive``
        would wait for the client to leave)."""
        while self._more:
            message = await self._read()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("client went away while sending the body")
            self._more = bool(message.get("more_body", False))
            body: bytes = message.get("body", b"")
            if body:
                return body
        return b""


def _raw_path(scope: Scope, path: str) -> str:
    """The path as the client sent it (still percent-encoded), mount prefix included: a
    client that knows the mount point signs the whole path, one that goes through a proxy
    stripping it signs ``path`` (REST accepts either, see ``server/rest.py``)."""
    raw: bytes | None = scope.get("raw_path")
    if not raw:
        root: str = scope.get("root_path", "")
        return root + path
    return raw.decode("latin-1").split("?", 1)[0]


class AsgiResponder:
    """``http_edge.Responder`` over ASGI ``send``; notices the client leaving by waiting
    on ``receive`` (in a task, once the body is no longer wanted)."""

    def __init__(self, scope: Scope, send: Send, receive: Receive) -> None:
        self._head = scope["method"] == "HEAD"
        self._receive = receive
        self._send = send
        self._watch: asyncio.Task[None] | None = None
        self._gone = False
        self.started = False
        self.status = 0  # not answered yet
        self.body = b""  # a whole response's body (for the debug trace)

    @property
    def gone(self) -> bool:
        self._watch_client()
        return self._gone

    def _watch_client(self) -> None:
        """From now on ``receive`` is only read for ``http.disconnect`` (the body, if
        wanted, has been read)."""
        if self._watch is None:
            self._watch = spawn(self._until_disconnect(), "ASGI client watch")

    async def _until_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the rest of a body nobody reads
        self._gone = True

    async def respond(self, response: HttpResponse) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type.encode("latin-1")))
        if response.status not in (204, 304):
            headers.append((b"content-length", str(len(response.body)).encode()))
        await self._start(response.status, headers)
        self.body = response.body
        body = b"" if self._head else response.body
        await self._out({"type": "http.response.body", "body": body, "more_body": False})

    async def start(
        self, status: int, headers: Mapping[str, str], *, chunked: bool, close: bool
    ) -> None:
        # No content-length either way: the server frames the body (chunked, in HTTP/1.1).
        encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if close:
            encoded.append((b"connection", b"close"))
        await self._start(status, encoded)
        self._watch_client()

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.started = True
        await self._out({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes) -> None:
        await self._out({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._out({"type": "http.response.body", "body": b"", "more_body": False})

    async def _out(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError as exc:  # servers differ: some drop writes to a closed client
            raise ClientDisconnected(str(exc)) from exc

    async def finish(self) -> None:
        """The request is over: stop watching its client."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch


class AsgiHttp:
    """Tidings' HTTP paths (REST, ``{http_path}/app/...`` fallbacks) as an ASGI app for
    ``http`` scopes, and a ``lifecycle.Edge``: add it to the node's ``Lifecycle``."""

    def __init__(self, node: Node, settings: Settings, metrics: Metrics | None = None) -> None:
        self.node = node
        self.metrics = metrics
        self.shutdown_timeout = settings.shutdown_timeout
        self.in_flight = InFlight()
        self.fallback = HttpFallback(node, FallbackSettings.of(settings))
        rest = RestApi(node, settings.max_request_body)
        self.router = Router(
            [*rest.endpoints(), *self.fallback.endpoints(), *tidings_js.endpoints()]
        )

    async def start(self) -> None:
        await self.fallback.start()

    async def stop_accepting(self) -> None:
        """Nothing here: the ASGI server owns the listener."""

    async def drain(self, grace: float) -> None:
        """After ``node.drain``: polling clients get ``grace`` seconds to collect their
        close frames (streams got theirs at once)."""
        await self.fallback.hand_over_closes(grace)

    async def close(self) -> None:
        """Forget every session, then let REST requests in flight finish."""
        await self.fallback.close()
        if not await self.in_flight.wait(self.shutdown_timeout):
            log.warning("REST requests still running after %g s", self.shutdown_timeout)

    def handles(self, path: str) -> bool:
        """``path`` (below any mount point) is one of Tidings' HTTP routes."""
        return self.router.handles(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", scope["type"]
        exchange = _Exchange(scope, route_path(scope), receive, AsgiResponder(scope, send, receive))
        try:
            if exchange.path.startswith(REST_PATHS):
                await self.in_flight.track(exchange, self._rest)
            else:
                await self._dispatch(exchange)
        except ClientDisconnected:
            log.debug(
                "client %s went away during %s %s",
                _client(scope),
                scope["method"],
                exchange.path,
            )
        finally:
            await exchange.responder.finish()

    async def _dispatch(self, exchange: _Exchange) -> Match | None:
        """Route the request and run its endpoint; the match, None for a 404/405."""
        found = self.router.match(exchange.scope["method"], exchange.path)
        if not isinstance(found, Match):
            # aiohttp's router answers these; the JSON is the edge middleware's.
            error = json_error(405, "Method Not Allowed") if found else json_error(404, "Not Found")
            await exchange.responder.respond(error)
            return None
        request = AsgiRequest(exchange.scope, exchange.path, found.params, exchange.receive)
        await found.route.endpoint(request, exchange.responder)
        return found

    async def _rest(self, exchange: _Exchange) -> None:
        """A REST request, timed by app, endpoint and status, and traced."""
        scope, responder = exchange.scope, exchange.responder
        started = time.perf_counter()
        match: Match | None = None
        try:
            match = await self._dispatch(exchange)
        except ClientDisconnected:
            responder.status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            self._observe(scope, match, responder.status or 500, time.perf_counter() - started)
        if trace.isEnabledFor(logging.DEBUG):
            error = responder.body.decode(errors="replace") if responder.status >= 400 else ""
            trace.debug(
                "REST %s %s from %s: %d %s",
                scope["method"],
                exchange.path,
                _client(scope),
                responder.status,
                error,
            )

    def _observe(self, scope: Scope, match: Match | None, status: int, seconds: float) -> None:
        """Into the same histogram as ``Metrics.observe`` (labelled the same way)."""
        if self.metrics is None:
            return
        endpoint = match.route.pattern if match is not None else "unknown"
        app_id = match.params.get("app_id") if match is not None else None
        app = self.node.apps.by_id(app_id) if app_id else None
        if app is None and app_id is None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            key = query.get("auth_key")
            app = self.node.apps.by_key(key) if key else None
        label = app.id if app is not None else NO_APP
        self.metrics.observe_rest(label, endpoint, status, seconds)


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One HTTP scope being served."""

    scope: Scope
    path: str  # below any mount point
    receive: Receive
    responder: AsgiResponder


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None
