"""pusher-js's HTTP fallbacks: ``xhr_streaming`` and ``xhr_polling``.

Where WebSocket is blocked, pusher-js opens a session
``{http_path}/app/{key}/{server}/{session}/`` and receives through ``xhr_streaming`` (one
long response) or ``xhr`` (long polls), sending through ``xhr_send``. Each session is a
full Pusher connection: the node and the protocol core treat it exactly like a WebSocket
(same session state machine, limits, error codes and timers); only this edge differs.

Messages for a session wait in a bounded :class:`~tidings.core.outbox.Outbox` between
polls. A session with no receive request attached for ``session_timeout`` seconds is closed
and forgotten; a streaming response gets a heartbeat every ``heartbeat_interval`` seconds so
proxies keep it open.

No sticky sessions: the node that opens a session claims it in the broker. A poll, stream
or send that reaches another process or machine is relayed to the owner over the broker:
sends are forwarded as they are; a receive request becomes a *relay*: the owner serves it
exactly as a local one (it alone decides when a poll is answered, so no batch is taken from
the queue for a receiver that already gave up) and sends the bytes to the relaying node,
which writes them into its HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from tidings.core.apps import App
from tidings.core.hub import Coalescer
from tidings.core.outbox import Outbox
from tidings.node import AppCounters, Node
from tidings.protocol import sockjs
from tidings.protocol.errors import ErrorCode, ProtocolError
from tidings.protocol.frames import frame_payloads
from tidings.protocol.session import Session
from tidings.server.rest import error_response, read_body
from tidings.server.websocket import connection_rate_exceeded

log = logging.getLogger("tidings.fallback")

RELAY_GRACE = 10.0  # seconds a relay waits past the owner's deadline before giving up


CHECK_INTERVAL = 1.0  # seconds between checks that a waiting client is still there


class Sink(Protocol):
    """Where a receive request's bytes go: a local HTTP response or a relaying node."""

    @property
    def gone(self) -> bool:
        """The client went away (pusher-js aborted the request or the connection dropped)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class ResponseSink:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response

    @property
    def gone(self) -> bool:
        return _client_gone(self.request)

    async def write(self, data: bytes) -> None:
        await self.response.write(data)

    async def end(self) -> None:
        await self.response.write_eof()


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    path: str = "/pusher"
    session_timeout: float = 10.0  # seconds without a receive request before a session ends
    poll_timeout: float = 25.0  # a long poll answers "h" after this long with nothing to send
    heartbeat_interval: float = 25.0  # "h" on a quiet streaming response
    max_queue_bytes: int = 1024 * 1024  # unsent bytes per session before it is closed (4100)


class HttpSession:
    """One pusher-js HTTP session; implements the node's ``Connection``."""

    __slots__ = (
        "socket_id",
        "session",
        "app",
        "key",
        "outbox",
        "closing",
        "close_frame",
        "detached_at",
        "receivers",
        "_wake",
        "_outgoing",
        "opened",
        "counters",
    )

    def __init__(
        self, key: str, session: Session, app: App, max_queue_bytes: int, outgoing: Coalescer
    ) -> None:
        self.key = key
        self.socket_id = session.socket_id
        self.session = session
        self.app = app
        self.outbox = Outbox(max_queue_bytes)
        self.closing = False
        self.close_frame: bytes | None = None
        self.detached_at: float | None = time.monotonic()
        self.receivers = 0
        self.opened = False
        self._wake = asyncio.Event()
        self._outgoing = outgoing
        self.counters: AppCounters | None = None

    def send(self, frame: bytes) -> None:
        """One or more frames (the fan-out joins those of one loop tick)."""
        if self.closing:
            return
        if self._outgoing:
            self._outgoing.flush()  # publications made before this frame go first
        for payload in frame_payloads(frame):
            if not self.outbox.push(payload):
                self._overflow()
                return
        self._wake.set()

    def _overflow(self) -> None:
        # The client stopped polling or reading: a slow consumer, as on WebSocket.
        log.warning("closed slow HTTP session %s (app %s)", self.socket_id, self.app.id)
        if self.counters is not None:
            self.counters.slow_consumers += 1
        self.outbox.drain()
        self.close(int(ErrorCode.OVER_CAPACITY), "Slow consumer")

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        if self._outgoing:
            self._outgoing.flush()
        self.closing = True
        self.session.closed = True
        self.close_frame = sockjs.close_frame(code, reason)
        self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Until there is something to send or ``timeout`` passes."""
        if len(self.outbox) or self.close_frame is not None:
            return
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def take(self) -> bytes:
        """The frames to write now: queued messages, then the close frame if any."""
        out = b""
        if len(self.outbox):
            out += sockjs.messages_frame(self.outbox.drain())
        if self.close_frame is not None:
            out += self.close_frame
        return out


def _cors(request: web.Request, app: App | None) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if app is not None and not app.origin_allowed(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Allow-Credentials": "true" if origin else "false",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }


class HttpFallback:
    def __init__(self, node: Node, settings: FallbackSettings) -> None:
        self.node = node
        self.settings = settings
        self.sessions: dict[str, HttpSession] = {}
        self.relays: dict[str, asyncio.Queue[tuple[bytes, bool]]] = {}
        self.remote_receivers: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        node.broker.on_node_message(self.on_node_message)

    def routes(self) -> list[web.RouteDef]:
        base = self.settings.path.rstrip("/") + "/app/{key}/{server}/{session}"
        return [
            web.post(base + "/xhr_streaming", self.streaming),
            web.post(base + "/xhr", self.polling),
            web.post(base + "/xhr_send", self.send),
            web.options(base + "/{kind}", self.preflight),
        ]

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for http_session in list(self.sessions.values()):
            await self._forget(http_session)

    # -- requests ----------------------------------------------------------------------------

    async def preflight(self, request: web.Request) -> web.Response:
        app = self.node.apps.by_key(request.match_info["key"])
        return web.Response(status=204, headers=_cors(request, app))

    async def streaming(self, request: web.Request) -> web.StreamResponse:
        return await self._receive(request, streaming=True)

    async def polling(self, request: web.Request) -> web.StreamResponse:
        return await self._receive(request, streaming=False)

    async def send(self, request: web.Request) -> web.StreamResponse:
        app = self.node.apps.by_key(request.match_info["key"])
        if app is None:
            return error_response(404, "unknown session")
        headers = _cors(request, app)
        key = self._key(request)
        body = await read_body(request, app.max_message_bytes * 4)
        if body is None:
            return error_response(413, "xhr_send body too large")
        try:
            texts = sockjs.parse_send(body)
        except ProtocolError as exc:
            return error_response(400, exc.message)
        http_session = self.sessions.get(key)
        if http_session is not None and http_session.app is app:
            await self._deliver_sent(http_session, texts)
            return web.Response(status=204, headers=headers)
        owner = await self.node.broker.claim(key, self._claim_ttl)
        if owner == self.node.broker.node_id:
            return error_response(404, "unknown session")  # nobody had it: just claimed it
        await self._to(owner, {"t": "send", "k": key, "m": texts})
        return web.Response(status=204, headers=headers)

    async def _deliver_sent(self, http_session: HttpSession, texts: list[str]) -> None:
        http_session.session.touch(self.node.clock())
        for text in texts:
            if len(text.encode()) > http_session.app.max_message_bytes:
                self.node.counters(http_session.app).count_close(1009)
                http_session.close(1009, "Message too big")
                break
            await self.node.receive(http_session, text)

    async def _receive(self, request: web.Request, streaming: bool) -> web.StreamResponse:
        app = self.node.apps.by_key(request.match_info["key"])
        headers = {
            **_cors(request, app),
            "Content-Type": "application/javascript; charset=UTF-8",
            "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
        }
        response = web.StreamResponse(status=200, headers=headers)
        if streaming:
            response.enable_chunked_encoding()
        if self.node.draining:
            # Make the client's next request open a new connection, which a load balancer
            # (or SO_REUSEPORT) can send to a node that is not going away.
            response.force_close()
        key = self._key(request)
        http_session = self.sessions.get(key)
        refusal: tuple[ErrorCode, str] | None = None
        owner: str | None = None
        if http_session is None or http_session.app is not app:
            refusal = self._refusal(request, app)
            if refusal is None:
                assert app is not None
                owner = await self.node.broker.claim(key, self._claim_ttl)
                if owner == self.node.broker.node_id:
                    # A new session, as a WebSocket upgrade is: over the rate, 503 before
                    # anything is written. (The claim expires with its TTL.)
                    if not self.node.take_connection_slot(app):
                        return connection_rate_exceeded()
                    http_session = self._open(key, app)
        await response.prepare(request)
        if streaming:
            await response.write(sockjs.PRELUDE)
        if refusal is not None:
            code, text = refusal
            self.node.counters_for(app).count_close(code)  # no pusher:error here: c[code]
            await response.write(sockjs.OPEN + sockjs.close_frame(int(code), text))
            await response.write_eof()
            return response
        if owner is not None and owner != self.node.broker.node_id:
            await self._relay(key, owner, request, response, streaming)
            return response
        assert http_session is not None
        if owner is not None:  # opened by this request
            await response.write(sockjs.OPEN)
            if not streaming:
                await response.write_eof()  # SockJS: the first poll only opens the session
                return response
        await self._serve(http_session, ResponseSink(request, response), streaming)
        return response

    async def _serve(self, http_session: HttpSession, sink: Sink, streaming: bool) -> None:
        http_session.receivers += 1
        http_session.detached_at = None
        quiet_limit = self.settings.heartbeat_interval if streaming else self.settings.poll_timeout
        loop = asyncio.get_running_loop()
        try:
            quiet_since = loop.time()
            while True:
                # Wait in short slices so a client that went away is noticed at once
                # (its session then starts counting towards session_timeout).
                await http_session.wait(min(CHECK_INTERVAL, quiet_limit))
                if sink.gone:
                    return
                out = http_session.take()
                if not out:
                    if loop.time() - quiet_since < quiet_limit:
                        continue
                    out = sockjs.HEARTBEAT
                await sink.write(out)
                quiet_since = loop.time()
                # A poll answers once; a stream goes on until the session closes.
                if not streaming or http_session.close_frame is not None:
                    break
            await sink.end()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away; the session waits for its next request
        finally:
            http_session.receivers -= 1
            if http_session.receivers == 0:
                http_session.detached_at = time.monotonic()
            if http_session.close_frame is not None and not len(http_session.outbox):
                await self._forget(http_session)

    # -- relaying to the owner of a session (another process or machine) --------------------

    @property
    def _claim_ttl(self) -> float:
        return self.settings.session_timeout + 30.0

    async def _relay(
        self,
        key: str,
        owner: str,
        request: web.Request,
        response: web.StreamResponse,
        streaming: bool,
    ) -> None:
        relay_id = secrets.token_hex(8)
        queue: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        self.relays[relay_id] = queue
        me = self.node.broker.node_id
        patience = (
            self.settings.heartbeat_interval if streaming else self.settings.poll_timeout
        ) + RELAY_GRACE
        loop = asyncio.get_running_loop()
        ended = False
        try:
            await self._to(owner, {"t": "attach", "k": key, "r": relay_id, "n": me, "s": streaming})
            heard_at = loop.time()
            while not ended:
                try:
                    data, ended = await asyncio.wait_for(queue.get(), CHECK_INTERVAL)
                    heard_at = loop.time()
                except TimeoutError:
                    if _client_gone(request):
                        return
                    if loop.time() - heard_at < patience:
                        continue
                    # The owner is gone: tell pusher-js to reconnect with a new session.
                    data = sockjs.close_frame(int(ErrorCode.RECONNECT), "Session lost")
                    ended = True
                if data:
                    await response.write(data)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            del self.relays[relay_id]
            if not ended:
                await self._to(owner, {"t": "detach", "k": key, "r": relay_id})

    async def _to(self, node_id: str, message: dict[str, Any]) -> None:
        await self.node.broker.to_node(node_id, orjson.dumps(message))

    def _receiver_done(self, relay_id: str) -> None:
        self.remote_receivers.pop(relay_id, None)

    async def on_node_message(self, payload: bytes) -> None:
        """Relay traffic from other nodes (see the module docstring)."""
        message = orjson.loads(payload)
        kind = message.get("t")
        if kind == "out":
            queue = self.relays.get(message["r"])
            if queue is not None:
                queue.put_nowait((message["d"].encode(), bool(message["e"])))
            return
        http_session = self.sessions.get(message["k"])
        if kind == "send":
            if http_session is not None:
                await self._deliver_sent(http_session, message["m"])
        elif kind == "attach":
            sink = RelaySink(self, message["n"], message["r"])
            if http_session is None:
                await sink.write(sockjs.close_frame(int(ErrorCode.RECONNECT), "Session expired"))
                await sink.end()
                return
            relay_id = message["r"]
            task = asyncio.create_task(self._serve(http_session, sink, bool(message["s"])))
            self.remote_receivers[relay_id] = task
            task.add_done_callback(lambda _: self._receiver_done(relay_id))
        elif kind == "detach":
            receiver = self.remote_receivers.pop(message["r"], None)
            if receiver is not None:
                receiver.cancel()

    def _open(self, key: str, app: App) -> HttpSession:
        session = self.node.new_session(app)
        http_session = HttpSession(
            key, session, app, self.settings.max_queue_bytes, self.node.outgoing
        )
        http_session.counters = self.node.counters(app)
        self.sessions[key] = http_session
        self.node.attach(http_session)  # queues pusher:connection_established
        return http_session

    async def _forget(self, http_session: HttpSession) -> None:
        if self.sessions.get(http_session.key) is http_session:
            del self.sessions[http_session.key]
        http_session.close(int(ErrorCode.RECONNECT), "Session ended")
        await self.node.detach(http_session)

    def _key(self, request: web.Request) -> str:
        info = request.match_info
        return f"{info['key']}/{info['server']}/{info['session']}"

    def _refusal(self, request: web.Request, app: App | None) -> tuple[ErrorCode, str] | None:
        return self.node.admission(
            app, request.query.get("protocol"), request.headers.get("Origin")
        )

    # -- expiry ------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = max(0.1, min(1.0, self.settings.session_timeout / 4))
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - last_refresh >= self.settings.session_timeout / 2:
                last_refresh = now
                await self.node.broker.refresh_claims(list(self.sessions), self._claim_ttl)
            for http_session in list(self.sessions.values()):
                detached = http_session.detached_at
                if detached is not None and now - detached >= self.settings.session_timeout:
                    await self._forget(http_session)


class RelaySink:
    """A receive request served here for a relaying node: bytes go back over the broker.

    The relaying node watches its client and sends ``detach`` when it goes away."""

    gone = False

    def __init__(self, fallback: HttpFallback, node_id: str, relay_id: str) -> None:
        self.fallback = fallback
        self.node_id = node_id
        self.relay_id = relay_id

    async def write(self, data: bytes) -> None:
        await self.fallback._to(
            self.node_id, {"t": "out", "r": self.relay_id, "d": data.decode(), "e": False}
        )

    async def end(self) -> None:
        await self.fallback._to(self.node_id, {"t": "out", "r": self.relay_id, "d": "", "e": True})
