"""Server-Sent Events: ``GET /app/{key}/events?channel=a&channel=b`` (``docs/sse.md``).

A stream is a Pusher connection like any other: the node gives it a socket id, counts it
against ``max_connections``, subscribes it through the protocol core (a private channel's
subscription is signed here, once the app's SSE token is checked) and writes to it through
the hub. Only this edge differs: it sends nothing back but the HTTP request, so

- each subscription opts in to recovery (``docs/recovery.md``): the stream learns every
  history channel's position, which it sends as the ``id:`` of its events, and a
  ``Last-Event-ID`` (or ``last_event_id`` in the query, for a first connect) resumes from
  those positions, or is answered with an in-band ``tidings:unrecovered`` event;
- the session's activity timeout is the ping interval: when the node's timers would ping an
  idle client, the stream writes a ``: ping`` comment instead and counts it as the pong;
- what the node writes waits in a bounded :class:`~tidings.core.outbox.Outbox` for the
  request's handler to write it; past ``max_write_buffer`` the stream is a slow consumer and
  is cut (the browser reconnects and resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from tidings.config import Settings
from tidings.core.apps import App
from tidings.core.connection import ConnectionBase
from tidings.core.counters import AppCounters
from tidings.core.hub import Coalescer
from tidings.core.outbox import Outbox
from tidings.core.publication import Publication
from tidings.node import Node
from tidings.protocol import messages, sse
from tidings.protocol.auth import sign
from tidings.protocol.channels import ChannelKind, channel_type, name_error
from tidings.protocol.errors import MESSAGES, ErrorCode
from tidings.protocol.recovery import unrecovered
from tidings.protocol.session import Session
from tidings.server.http_edge import client_gone

log = logging.getLogger("tidings.sse")

CHECK_INTERVAL = 1.0  # seconds between checks that an idle stream's client is still there

# As Centrifugo's uni_sse sends them: nothing between the browser and us may cache a stream
# (HTTP/1.0 caches read Pragma and Expires), and nginx passes each event on unbuffered.
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "private, no-cache, no-store, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Accel-Buffering": "no",
}

# Events the stream keeps to itself: the connection's own bookkeeping, not the app's.
_UNSENT = frozenset(
    {"pusher:connection_established", "pusher:pong", "pusher_internal:subscription_succeeded"}
)


@dataclass(frozen=True, slots=True)
class SseSettings:
    ping_interval: float = 20.0  # a ": ping" comment on a stream quiet this long
    max_queue_bytes: int = 1024 * 1024  # unwritten bytes per stream before it is cut

    @classmethod
    def of(cls, settings: Settings) -> SseSettings:
        return cls(settings.sse_ping_interval, settings.max_write_buffer)


class SseConnection(ConnectionBase):
    """One stream as the node's ``Connection``.

    Until :meth:`begin`, the stream is *setting up*: its subscriptions are being made, and
    what the node sends is kept as read (not yet written), so that the first ``id:`` already
    holds the position of every channel. A refusal then is answered with an HTTP error."""

    __slots__ = (
        "closing",
        "counters",
        "_outgoing",
        "socket_id",
        "session",
        "app",
        "ids",
        "resumed",
        "refused",
        "ended",
        "outbox",
        "_pending",
        "_pending_bytes",
        "_wake",
        "_clock",
        "_abort",
    )

    def __init__(
        self,
        session: Session,
        app: App,
        max_queue_bytes: int,
        outgoing: Coalescer,
        counters: AppCounters,
        clock: Callable[[], float],
        abort: Callable[[], None],
    ) -> None:
        super().__init__(outgoing, counters)
        self.socket_id = session.socket_id
        self.session = session
        self.app = app
        self.ids = sse.StreamId()
        # Channels resumed from a Last-Event-ID, with the mark the client had.
        self.resumed: dict[str, sse.Mark] = {}
        self.refused: bytes | None = None  # the first refusal while setting up
        self.ended = False  # closed by the node: end the response once the outbox is empty
        self.outbox = Outbox(max_queue_bytes)
        self._pending: list[sse.Outgoing] | None = []  # None once begun
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._clock = clock
        self._abort = abort

    # -- what the node writes ----------------------------------------------------------------

    def _write(self, message: bytes) -> None:
        if message == messages.PING:
            # The node's timers found the stream idle: keep it (and proxies) awake, and take
            # the comment as the pong an EventSource cannot send.
            self.session.touch(self._clock())
            self._push(sse.PING)
            return
        self._take([sse.read(message)])

    def _publish(self, publication: Publication) -> None:
        self._take(publication.sse)

    def _take(self, items: list[sse.Outgoing]) -> None:
        pending = self._pending
        if pending is None:
            self._push(b"".join([self._frame(item) for item in items]))
            return
        for item in items:
            if item.event in ("pusher:subscription_error", "pusher:error"):
                if self.refused is None:
                    self.refused = item.data
                continue
            pending.append(item)
            self._pending_bytes += len(item.data)
        if self._pending_bytes > self.outbox.limit:
            self.slow_consumer()

    def _frame(self, item: sse.Outgoing) -> bytes:
        if item.event in _UNSENT or item.event.startswith("pusher_internal:"):
            return b""
        if item.offset is not None and item.channel is not None:
            if self.ids.advance(item.channel, item.offset):
                return sse.event(item.data, self.ids.encode())
        return sse.event(item.data)

    def _push(self, data: bytes) -> None:
        if not data:
            return
        if not self.outbox.push(data):
            self.slow_consumer()
            return
        self._wake.set()

    def begin(self, unrecoverable: list[str]) -> None:
        """The subscriptions are made: write the stream's first id, then what arrived
        meanwhile. ``unrecoverable``: channels the client resumed with an id this server
        cannot read; each is told ``tidings:unrecovered`` at its position."""
        pending, self._pending = self._pending or [], None
        self._pending_bytes = 0
        for item in pending:
            if item.event != "pusher_internal:subscription_succeeded" or item.channel is None:
                continue
            self._place(item)
        out = [sse.id_only(self.ids.encode())] if self.ids else []
        for channel in unrecoverable:
            mark = self.ids.mark(channel)
            if mark is not None:
                out.append(sse.event(unrecovered(channel, mark.epoch, mark.offset)))
        out.extend([self._frame(item) for item in pending])
        self._push(b"".join(out))

    def _place(self, item: sse.Outgoing) -> None:
        """Where the stream stands on a channel it just subscribed to. A recovered channel
        stays at the client's mark: its replay follows and moves it up to the top, so an
        id written before the replay never claims events the client has not received."""
        assert item.channel is not None
        if item.position is None:
            self.ids.forget(item.channel)  # no history, or none readable now: no resume
        elif item.recovered is True:
            mark = self.resumed.get(item.channel, item.position)
            self.ids.set(item.channel, mark.epoch, mark.offset)
        else:
            self.ids.set(item.channel, item.position.epoch, item.position.offset)

    # -- closing -----------------------------------------------------------------------------

    def _closed(self, code: int, reason: str) -> None:
        """The response ends after what is queued; EventSource then reconnects."""
        self.session.closed = True
        self.ended = True
        self._wake.set()

    def _drop_slow(self) -> None:
        log.warning("closed slow SSE stream %s (app %s)", self.socket_id, self.app.id)
        self.outbox.drain()
        self._closed(int(ErrorCode.OVER_CAPACITY), "Slow consumer")
        self._abort()  # the handler may be blocked writing to a client that reads nothing

    # -- the request's side ------------------------------------------------------------------

    def take(self) -> bytes:
        return b"".join(self.outbox.drain())

    async def wait(self, timeout: float) -> None:
        """Until there is something to write, the stream ended, or ``timeout`` passes."""
        if len(self.outbox) or self.ended:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


class SseEndpoint:
    def __init__(self, node: Node, settings: SseSettings) -> None:
        self.node = node
        self.settings = settings

    def routes(self) -> list[web.RouteDef]:
        return [
            # No HEAD: it would subscribe a stream that can never send anything.
            web.get("/app/{key}/events", self.handle, allow_head=False),
            web.options("/app/{key}/events", self.preflight),
        ]

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        app = self.node.apps.by_key(request.match_info["key"])
        return web.Response(status=204, headers=_cors(request, app))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app = self.node.apps.by_key(request.match_info["key"])
        cors = _cors(request, app)
        if app is None:
            return _error(404, f"No app with key {request.match_info['key']}", cors)
        if not app.origin_allowed(request.headers.get("Origin")):
            return _error(403, "Origin not allowed", cors)
        channels, problem = _channels(request, app)
        if problem is not None:
            return _error(400, problem, cors)
        private = [c for c in channels if channel_type(c).kind is ChannelKind.PRIVATE]
        if private:
            token = request.query.get("token")
            if token is None:
                return _error(401, "private channels need a token (tidings.sse_token)", cors)
            refused = sse.token_error(app.secret, private, token, self.node.wall_clock())
            if refused is not None:
                return _error(401, refused, cors)
        elif app.authorized_connections:
            return _error(403, "this app accepts only streams with a private channel", cors)
        resume_from = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        marks: dict[str, sse.Mark] = {}
        unreadable = False
        if resume_from:
            try:
                marks = sse.decode_id(resume_from, channels)
            except sse.BadId:
                unreadable = True
        code = self.node.refusal(app)
        if code is not None and int(code) < 4100:
            return _error(403, MESSAGES[code], cors)
        if code is not None:
            return await _retry_later(request, cors, code, MESSAGES[code])
        if not self.node.take_connection_slot(app):
            return await _retry_later(
                request, cors, ErrorCode.OVER_CAPACITY, "Too many new streams"
            )
        return await self._stream(request, app, channels, marks, unreadable, cors)

    async def _stream(
        self,
        request: web.Request,
        app: App,
        channels: list[str],
        marks: dict[str, sse.Mark],
        unreadable: bool,
        cors: dict[str, str],
    ) -> web.StreamResponse:
        node = self.node
        session = node.new_session(app, activity_timeout=self.settings.ping_interval)
        stream = SseConnection(
            session,
            app,
            self.settings.max_queue_bytes,
            node.outgoing,
            node.counters(app),
            node.clock,
            lambda: _abort(request),
        )
        stream.resumed = marks
        node.attach(stream, "sse")
        response: web.StreamResponse | None = None
        try:
            for channel in channels:
                await node.receive(stream, _subscribe(app, stream.socket_id, channel, marks))
                if stream.refused is not None or stream.closing:
                    break
            if stream.refused is not None:
                return _refusal(stream.refused, cors)
            if stream.closing:  # drained or cut meanwhile
                return await _retry_later(request, cors, ErrorCode.RECONNECT, "Stream closed")
            # No length: chunked on HTTP/1.1, read to the close on HTTP/1.0 (aiohttp's choice).
            response = web.StreamResponse(status=200, headers={**HEADERS, **cors})
            await response.prepare(request)
            await response.write(sse.PRELUDE)
            stream.begin(channels if unreadable else [])
            while True:
                data = stream.take()
                if data:
                    await response.write(data)
                    continue
                if stream.ended or client_gone(request):
                    break
                await stream.wait(CHECK_INTERVAL)
            if not client_gone(request):
                await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away, or the stream was cut as a slow consumer
        finally:
            stream.close(int(ErrorCode.RECONNECT), "Stream ended")
            await node.detach(stream)
        return response if response is not None else _error(503, "stream ended", cors)


def _channels(request: web.Request, app: App) -> tuple[list[str], str | None]:
    """The stream's channels, each once, in the order given; or why they are refused."""
    given = request.query.getall("channel", [])
    if not given:
        return [], "name at least one channel: ?channel=a&channel=b"
    if len(given) > sse.MAX_CHANNELS:
        return [], f"at most {sse.MAX_CHANNELS} channels per stream"
    channels = list(dict.fromkeys(given))
    for channel in channels:
        problem = name_error(channel, app.max_channel_name_length)
        if problem is not None:
            return [], f"{channel!r}: {problem}"
        kind = channel_type(channel).kind
        if kind is ChannelKind.ENCRYPTED:
            return [], f"{channel}: encrypted channels need a client library to decrypt them"
        if kind is ChannelKind.PRESENCE:
            return [], f"{channel}: presence channels need a member, which a stream is not"
        if kind is ChannelKind.USER:
            return [], f"{channel}: user channels need a signed-in connection"
    return channels, None


def _subscribe(app: App, socket_id: str, channel: str, marks: dict[str, sse.Mark]) -> bytes:
    """The ``pusher:subscribe`` a Pusher client would send for this channel, opted in to
    recovery; a private one signed here (the SSE token stood for the app's auth answer)."""
    tidings: dict[str, object] = {"v": 1}
    mark = marks.get(channel)
    if mark is not None:
        tidings["recover"] = {"epoch": mark.epoch, "offset": mark.offset}
    data: dict[str, object] = {"channel": channel, "tidings": tidings}
    if channel_type(channel).needs_auth:
        data["auth"] = f"{app.key}:{sign(app.secret, f'{socket_id}:{channel}')}"
    return orjson.dumps({"event": "pusher:subscribe", "data": data})


def _cors(request: web.Request, app: App | None) -> dict[str, str]:
    # No credentials: a stream is opened by its URL (and token) alone, never by cookies.
    origin = request.headers.get("Origin")
    if app is not None and not app.origin_allowed(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Allow-Headers": "Last-Event-ID, Cache-Control",
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }


def _error(status: int, message: str, cors: dict[str, str]) -> web.Response:
    """An HTTP error with a JSON body. EventSource gives up on any status but 200."""
    body = orjson.dumps({"error": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=cors)


def _refusal(message: bytes, cors: dict[str, str]) -> web.Response:
    """A subscription the node refused (the subscription_error's status, else 400)."""
    refusal = orjson.loads(message).get("data")
    if not isinstance(refusal, dict):
        return _error(400, "subscription refused", cors)
    status = refusal.get("status")
    text = str(refusal.get("error") or refusal.get("message") or "subscription refused")
    return _error(status if status in (400, 401, 403) else 400, text, cors)


async def _retry_later(
    request: web.Request, cors: dict[str, str], code: ErrorCode, reason: str
) -> web.StreamResponse:
    """A refusal the browser should retry (a full or draining node): a 200 stream that
    says why and ends at once, since EventSource reconnects only after a 200."""
    response = web.StreamResponse(status=200, headers={**HEADERS, **cors})
    await response.prepare(request)
    await response.write(sse.PRELUDE + sse.event(messages.error(reason, code)))
    await response.write_eof()
    return response


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
