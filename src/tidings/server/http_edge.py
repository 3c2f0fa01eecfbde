"""One HTTP request and its answer, whatever server carries them (aiohttp or ASGI).

The REST API and pusher-js's HTTP fallbacks are written against :class:`HttpRequest` and
:class:`Responder` only, so the same handler code answers under ``tidings serve`` (aiohttp,
:func:`aiohttp_handler`) and inside an ASGI app (``tidings.asgi.http``). A handler either
answers at once (:meth:`Responder.respond`) or streams (:meth:`Responder.start`, then
:meth:`~Responder.write` and :meth:`~Responder.end`): ``xhr_streaming`` is one long response.

Routes are declared once (:class:`Route`) in aiohttp's pattern syntax (``/apps/{app_id}``);
aiohttp routes them itself, ASGI through :class:`Router`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiohttp import web

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole answer: status, body and the headers beyond Content-Type and Content-Length."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


# What most REST calls answer (a trigger without ``info``), made once.
EMPTY_OK = HttpResponse(200, b"{}")


def json_response(body: object, status: int = 200) -> HttpResponse:
    if status == 200 and type(body) is dict and not body:
        return EMPTY_OK
    return HttpResponse(status, orjson.dumps(body))


def json_error(status: int, message: str) -> HttpResponse:
    """Every error Tidings answers over HTTP: ``{"error": message}`` with its status."""
    return json_response({"error": message}, status)


class HttpRequest(Protocol):
    """What the handlers read of a request."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str:
        """Percent-decoded, without the query string (and without any mount prefix)."""
        ...

    @property
    def raw_path(self) -> str:
        """As the client sent it (still percent-encoded, and under ASGI with any mount
        prefix), without the query string."""
        ...

    @property
    def query(self) -> Mapping[str, str]:
        """The first value of each query parameter."""
        ...

    @property
    def query_items(self) -> list[tuple[str, str]]:
        """Every query parameter, in order, repeated names included (for signatures)."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    @property
    def remote(self) -> str | None:
        """The client's address, as the server (or its trusted proxy handling) sees it."""
        ...

    @property
    def params(self) -> Mapping[str, str]:
        """What the route's ``{name}`` parts matched."""
        ...

    async def read_body(self, limit: int) -> bytes | None:
        """The whole body, or None as soon as it is known to pass ``limit`` bytes."""
        ...


class Responder(Protocol):
    """Where a handler's answer goes. Also a fallback ``Sink`` once started."""

    @property
    def gone(self) -> bool:
        """The client went away (checked while a response streams or waits)."""
        ...

    async def respond(self, response: HttpResponse) -> None:
        """Answer with a whole response (nothing may have been started)."""
        ...

    async def start(
        self, status: int, headers: Mapping[str, str], *, chunked: bool, close: bool
    ) -> None:
        """Begin a response whose body follows in :meth:`write` calls. ``chunked``: its
        length is unknown (a stream); ``close``: the connection closes after it."""
        ...

    @property
    def started(self) -> bool: ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


Endpoint = Callable[[HttpRequest, Responder], Awaitable[None]]


async def read_limited(
    content_length: int | None, read_chunk: Callable[[], Awaitable[bytes]], limit: int
) -> bytes | None:
    """A body read with ``read_chunk`` until it returns ``b""``, or None as soon as it is
    known to pass ``limit`` bytes (a declared length says so before anything is read)."""
    if content_length is not None and content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await read_chunk():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# -- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """``method`` requests to paths matching ``pattern`` (aiohttp's syntax) go to
    ``endpoint``; GET routes answer HEAD too, as aiohttp's do."""

    method: str
    pattern: str
    endpoint: Endpoint

    def methods(self) -> tuple[str, ...]:
        return ("GET", "HEAD") if self.method == "GET" else (self.method,)


_PARAMETER = re.compile(r"\{(\w+)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    """aiohttp's ``{name}``: one non-empty path segment."""
    parts = _PARAMETER.split(pattern)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^{{}}/]+)" for i, part in enumerate(parts)
    )
    return re.compile(regex + "$")


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


class Router:
    """Matches a path against routes, for servers that do not route themselves (ASGI)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [(route, _compile(route.pattern)) for route in routes]

    def handles(self, path: str) -> bool:
        """Some route has this path, whatever its method."""
        return any(regex.match(path) for _, regex in self._routes)

    def match(self, method: str, path: str) -> Match | list[str]:
        """The route for this request; else the methods the path allows (405), empty if
        none (404)."""
        allowed: list[str] = []
        for route, regex in self._routes:
            found = regex.match(path)
            if found is None:
                continue
            if method in route.methods():
                return Match(route, found.groupdict())
            allowed.extend(route.methods())
        return allowed


# -- aiohttp -----------------------------------------------------------------------------------


class AiohttpRequest:
    """An aiohttp request, as :class:`HttpRequest`."""

    __slots__ = ("request",)

    def __init__(self, request: web.Request) -> None:
        self.request = request

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def raw_path(self) -> str:
        return self.request.raw_path.split("?", 1)[0]

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    @property
    def query_items(self) -> list[tuple[str, str]]:
        return list(self.request.query.items())

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    @property
    def remote(self) -> str | None:
        return self.request.remote

    @property
    def params(self) -> Mapping[str, str]:
        return self.request.match_info

    async def read_body(self, limit: int) -> bytes | None:
        # (StreamReader.read(n) returns what has arrived so far, not n bytes.)
        content = self.request.content
        try:
            return await read_limited(
                self.request.content_length, lambda: content.read(65536), limit
            )
        except RuntimeError:
            # aiohttp's reader says "Connection closed." when the connection went away while
            # it waited (a cut slow upload): a client gone, not an error of ours.
            if not client_gone(self.request):
                raise
            raise ConnectionResetError("the client went away during the body") from None


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class AiohttpResponder:
    """Builds the aiohttp response a handler returns: a ``web.Response`` for a whole
    answer, a prepared ``web.StreamResponse`` for a streamed one."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    @property
    def gone(self) -> bool:
        return client_gone(self.request)

    async def respond(self, response: HttpResponse) -> None:
        self.response = aiohttp_response(response)

    async def start(
        self, status: int, headers: Mapping[str, str], *, chunked: bool, close: bool
    ) -> None:
        response = web.StreamResponse(status=status, headers=headers)
        if chunked:
            response.enable_chunked_encoding()
        if close:
            response.force_close()
        self.response = response
        await response.prepare(self.request)

    @property
    def started(self) -> bool:
        return self.response is not None and self.response.prepared

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()


def aiohttp_response(response: HttpResponse) -> web.Response:
    return web.Response(
        body=response.body or None,
        status=response.status,
        content_type=response.content_type,
        headers=response.headers or None,  # (None: aiohttp then copies no mapping)
    )


def aiohttp_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        responder = AiohttpResponder(request)
        await endpoint(AiohttpRequest(request), responder)
        assert responder.response is not None, "the endpoint did not answer"
        return responder.response

    return handle


def aiohttp_routes(routes: Iterable[Route]) -> list[web.RouteDef]:
    """aiohttp routes for ``routes`` (GET ones answer HEAD too, aiohttp's default)."""
    return [web.route(r.method, r.pattern, aiohttp_handler(r.endpoint)) for r in routes]
