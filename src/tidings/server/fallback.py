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

A session belongs to the client that opened it. Its name is chosen by the client and is the
only secret, so the server also holds it to what it saw at open: one receive request at a
time (a second one is answered ``c[2010,...]``, as SockJS does), the same ``Origin`` header
on every request and, with ``bind_ip``, the same client address. A session opened but never
received from (a first poll answers only ``o``) is *unconfirmed*: it is not yet a connection
(no socket id announced, no quota taken) and is forgotten after ``unconfirmed_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tidings.config import Settings
from tidings.core.apps import App
from tidings.core.send_order import Batch, SendOrder
from tidings.node import Node
from tidings.protocol import sockjs
from tidings.protocol.errors import MESSAGES, ErrorCode, ProtocolError
from tidings.server.http_edge import (
    HttpRequest,
    HttpResponse,
    Responder,
    Route,
    aiohttp_routes,
    json_error,
)
from tidings.server.http_session import CHECK_INTERVAL, ClientBinding, HttpSession, Sink
from tidings.tasks import spawn

RELAY_GRACE = 10.0  # seconds a relay waits past the owner's deadline before giving up


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    path: str = "/pusher"
    session_timeout: float = 10.0  # seconds without a receive request before a session ends
    poll_timeout: float = 25.0  # a long poll answers "h" after this long with nothing to send
    heartbeat_interval: float = 25.0  # "h" on a quiet streaming response
    max_queue_bytes: int = 1024 * 1024  # unsent bytes per session before it is closed (4100)
    # seconds an opened session waits for its first receive request before it is forgotten
    unconfirmed_timeout: float = 5.0
    # unconfirmed sessions per node; past it a new session is answered 503 (retry later)
    max_unconfirmed: int = 10_000
    bind_ip: bool = False  # every request of a session must come from the opener's address
    # seconds a send waits for an earlier one of its client still on its way through another
    # node (core/send_order.py); 0: applied in arrival order (one node: nothing is relayed)
    send_order_wait: float = 0.0

    @classmethod
    def of(cls, settings: Settings) -> FallbackSettings:
        """The fallback's part of the server's settings (one mapping for every edge)."""
        return cls(
            path=settings.http_path,
            session_timeout=settings.http_session_timeout,
            poll_timeout=min(25.0, settings.activity_timeout),
            heartbeat_interval=min(25.0, settings.activity_timeout),
            max_queue_bytes=settings.max_write_buffer,
            unconfirmed_timeout=settings.http_unconfirmed_timeout,
            max_unconfirmed=settings.http_max_unconfirmed,
            bind_ip=settings.http_bind_ip,
            send_order_wait=settings.http_send_order_wait if settings.redis else 0.0,
        )


def _cors(request: HttpRequest, app: App | None) -> dict[str, str]:
    # No Access-Control-Allow-Credentials: the protocol uses no cookies and pusher-js sets
    # no withCredentials; the session name in the URL is the only credential.
    origin = request.headers.get("Origin")
    if app is not None and not app.origin_allowed(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }


_PRELUDE = len(sockjs.PRELUDE)


def connection_rate_exceeded() -> HttpResponse:
    """503 before anything is written, as for a WebSocket upgrade over max_connection_rate
    (the same bytes as ``server/websocket.py``'s answer)."""
    body = b'{"error": "Too many new connections; retry in a second"}'
    headers = {"Content-Type": "application/json; charset=utf-8", "Retry-After": "1"}
    return HttpResponse(503, body, content_type=None, headers=headers)


@dataclass(frozen=True, slots=True)
class _Stream:
    """How a receive request's response starts, decided before anything is written."""

    responder: Responder
    streaming: bool
    headers: dict[str, str]
    close: bool

    async def start(self) -> None:
        await self.responder.start(200, self.headers, chunked=self.streaming, close=self.close)
        if self.streaming:
            await self.responder.write(sockjs.PRELUDE)


def _another_receiver() -> bytes:
    return sockjs.close_frame(sockjs.ANOTHER_RECEIVER_CODE, sockjs.ANOTHER_RECEIVER_REASON)


NOT_YOURS = "this session belongs to another client"


class HttpFallback:
    def __init__(self, node: Node, settings: FallbackSettings) -> None:
        self.node = node
        self.settings = settings
        self.sessions: dict[str, HttpSession] = {}
        # Keys of sessions no receive request has attached to yet (bounded: max_unconfirmed).
        self.unconfirmed: set[str] = set()
        self.relays: dict[str, asyncio.Queue[tuple[bytes, bool, int]]] = {}
        # Relay id -> (owner node, session key), for the relays this node serves.
        self.relayed_for: dict[str, tuple[str, str]] = {}
        self.remote_receivers: dict[str, asyncio.Task[None]] = {}
        # Per session key, while sends wait for an earlier one: gives up on it in time.
        self.order_timers: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Relay messages are JSON objects: their first byte is the tag (brokers/node_messages.py).
        node.node_messages.handle(b"{", self.on_node_message)

    def endpoints(self) -> list[Route]:
        """The fallback's routes, for any server (see ``server/http_edge.py``)."""
        base = self.settings.path.rstrip("/") + "/app/{key}/{server}/{session}"
        return [
            Route("POST", base + "/xhr_streaming", self.streaming),
            Route("POST", base + "/xhr", self.polling),
            Route("POST", base + "/xhr_send", self.send),
            Route("OPTIONS", base + "/{kind}", self.preflight),
        ]

    def routes(self) -> list[web.RouteDef]:
        return aiohttp_routes(self.endpoints())

    async def start(self) -> None:
        self._sweeper = spawn(self._sweep_forever(), "fallback session sweeper")

    async def hand_over_closes(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for clients to collect their close frames (4200).

        A polling client has no request open for a moment after each answer. A drain in that
        moment can only queue its close frame; the client's next poll comes on the keep-alive
        connection, which stays open until the runner's cleanup. Without this wait, that
        client would see its connection reset (a 1006 for pusher-js) instead of being told
        to reconnect.

        Receive requests this node relays for sessions owned elsewhere would be cut the same
        way when the server stops: their owners are asked to close those sessions with 4200
        too, through the relay, and the wait covers them."""
        for relay_id, (owner, key) in list(self.relayed_for.items()):
            await self._to(owner, {"t": "drain", "k": key, "r": relay_id})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and (
            self.relays or any(s.owes_close for s in self.sessions.values())
        ):
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for http_session in list(self.sessions.values()):
            await self._forget(http_session)

    # -- requests ----------------------------------------------------------------------------

    async def preflight(self, request: HttpRequest, responder: Responder) -> None:
        bad_name = self._bad_name(request)
        if bad_name is not None:
            return await responder.respond(bad_name)
        app = self.node.apps.by_key(request.params["key"])
        await responder.respond(HttpResponse(204, content_type=None, headers=_cors(request, app)))

    async def streaming(self, request: HttpRequest, responder: Responder) -> None:
        await self._receive(request, responder, streaming=True)

    async def polling(self, request: HttpRequest, responder: Responder) -> None:
        await self._receive(request, responder, streaming=False)

    async def send(self, request: HttpRequest, responder: Responder) -> None:
        await responder.respond(await self._send(request))

    async def _send(self, request: HttpRequest) -> HttpResponse:
        bad_name = self._bad_name(request)
        if bad_name is not None:
            return bad_name
        app = self.node.apps.by_key(request.params["key"])
        if app is None:
            return json_error(404, "unknown session")
        origin = request.headers.get("Origin")
        if not app.origin_allowed(origin):
            return json_error(403, "Origin not allowed")
        accepted = HttpResponse(204, content_type=None, headers=_cors(request, app))
        key = self._key(request)
        body = await request.read_body(app.max_message_bytes * 4)
        if body is None:
            return json_error(413, "xhr_send body too large")
        try:
            texts = sockjs.parse_send(body)
        except ProtocolError as exc:
            return json_error(400, exc.message)
        number = sockjs.request_number(request.query.get("n"))
        http_session = self.sessions.get(key)
        if http_session is not None:
            if not http_session.binding.admits(origin, request.remote):
                return json_error(403, NOT_YOURS)
            if not http_session.confirmed:
                # pusher-js sends nothing before connection_established, which only a
                # receive request brings; the node does not know this session yet.
                return json_error(404, "unknown session")
            await self._deliver_sent(http_session, texts, number)
            return accepted
        owner = await self.node.broker.claims.claim(key, self._claim_ttl)
        if owner == self.node.broker.node_id:
            return json_error(404, "unknown session")  # nobody had it: just claimed it
        # The owner checks the binding and drops a send that fails it (fire and forget:
        # pusher-js reads no xhr_send answer).
        message = {
            "t": "send",
            "k": key,
            "m": texts,
            "o": origin,
            "ip": request.remote,
            "q": number,
        }
        await self._to(owner, message)
        return accepted

    async def _deliver_sent(
        self, http_session: HttpSession, texts: list[str], number: int | None
    ) -> None:
        """Apply one xhr_send's messages, in the client's order of sends (see
        ``core/send_order.py``): maybe later, after an earlier send still on its way."""
        http_session.session.touch(self.node.clock())
        order = http_session.order
        if order is None:
            return await self._apply(http_session, [tuple(texts)])
        due = order.send(number, tuple(texts), asyncio.get_running_loop().time())
        self._watch_order(http_session)
        await self._apply(http_session, due)

    def _received(self, http_session: HttpSession, number: int | None) -> list[Batch]:
        """A receive request numbered ``number`` reached the session: the sends it was the
        gap before, due now (the caller applies them before anything else)."""
        order = http_session.order
        if order is None:
            return []
        due = order.receive(number, asyncio.get_running_loop().time())
        self._watch_order(http_session)
        return due

    async def _apply(self, http_session: HttpSession, batches: list[Batch]) -> None:
        """Run the messages of ``batches`` through the node, one at a time, in order.

        Callers take ``batches`` from the session's SendOrder and come here without awaiting
        anything in between: the lock is first come, first served, so batches are applied
        in the order they were released, and a message whose ``before`` hook awaits is not
        overtaken by the next one."""
        if not batches:
            return
        async with http_session.sending:
            for texts in batches:
                for text in texts:
                    if http_session.session.closed:
                        return
                    if len(text.encode()) > http_session.app.max_message_bytes:
                        self.node.counters(http_session.app).count_close(1009)
                        http_session.close(1009, "Message too big")
                        return
                    await self.node.receive(http_session, text)

    def _watch_order(self, http_session: HttpSession) -> None:
        """Start giving up on a gap in time, if sends now wait for one."""
        order = http_session.order
        key = http_session.key
        if order is None or order.deadline is None or key in self.order_timers:
            return
        self.order_timers[key] = spawn(self._give_up_gaps(http_session), "fallback send order")

    async def _give_up_gaps(self, http_session: HttpSession) -> None:
        """Apply the sends waiting for an earlier one that has not come within the wait."""
        order = http_session.order
        assert order is not None
        loop = asyncio.get_running_loop()
        try:
            while (deadline := order.deadline) is not None:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                await self._apply(http_session, order.expire(loop.time()))
        finally:
            if self.order_timers.get(http_session.key) is asyncio.current_task():
                del self.order_timers[http_session.key]

    async def _receive(self, request: HttpRequest, responder: Responder, streaming: bool) -> None:
        bad_name = self._bad_name(request)
        if bad_name is not None:
            return await responder.respond(bad_name)
        app = self.node.apps.by_key(request.params["key"])
        stream = _Stream(
            responder,
            streaming,
            headers={
                **_cors(request, app),
                "Content-Type": "application/javascript; charset=UTF-8",
                "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
            },
            # Make the client's next request open a new connection, which a load balancer
            # (or SO_REUSEPORT) can send to a node that is not going away.
            close=self.node.draining,
        )
        key = self._key(request)
        origin = request.headers.get("Origin")
        number = sockjs.request_number(request.query.get("n"))
        http_session = self.sessions.get(key)
        # An origin the app refuses is answered as at open, on every node and whether or
        # not the session exists (Pusher: 4009, final).
        if http_session is None or not http_session.app.origin_allowed(origin):
            refusal = self._refusal(request, app)
            if refusal is not None:
                code, text = refusal
                self.node.counters_for(app).count_close(code)  # no pusher:error here: c[code]
                await stream.start()
                await responder.write(sockjs.OPEN + sockjs.close_frame(int(code), text))
                return await responder.end()
        if http_session is None:
            assert app is not None
            owner = await self.node.broker.claims.claim(key, self._claim_ttl)
            if owner != self.node.broker.node_id:
                return await self._relay(key, owner, request, stream, number)
            # A request for the same new session may have opened it while we asked.
            http_session = self.sessions.get(key)
            if http_session is None:
                # A new session, as a WebSocket upgrade is: over the rate, 503 before
                # anything is written. (The claim expires with its TTL.)
                if len(self.unconfirmed) >= self.settings.max_unconfirmed:
                    self.node.counters(app).connection_rate_refusals += 1
                    return await responder.respond(connection_rate_exceeded())
                if not self.node.take_connection_slot(app):
                    return await responder.respond(connection_rate_exceeded())
                http_session = self._open(key, app, self._binding(request), number)
                await stream.start()
                await responder.write(sockjs.OPEN)
                if not streaming:
                    return await responder.end()  # SockJS: the first poll only opens it
                await self._serve(http_session, responder, streaming, _PRELUDE + len(sockjs.OPEN))
                return None
        if not http_session.binding.admits(origin, request.remote):
            return await responder.respond(json_error(403, NOT_YOURS))
        await self._apply(http_session, self._received(http_session, number))
        await stream.start()
        await self._serve(http_session, responder, streaming, _PRELUDE if streaming else 0)
        return None

    async def _serve(
        self, http_session: HttpSession, sink: Sink, streaming: bool, written: int
    ) -> None:
        """Attach ``sink`` as the session's receiver and write to it: a poll's one answer,
        or a stream until the session closes. ``written``: the response's length so far
        (pusher-js's measure, :func:`sockjs.text_length`)."""
        if not await http_session.take_receiver(sink):
            with contextlib.suppress(ConnectionResetError):
                await sink.write(_another_receiver())
                await sink.end()
            return
        if not http_session.confirmed:
            self._confirm(http_session, "xhr_streaming" if streaming else "xhr_polling")
        quiet_limit = self.settings.heartbeat_interval if streaming else self.settings.poll_timeout
        loop = asyncio.get_running_loop()
        try:
            quiet_since = loop.time()
            while True:
                if streaming and written > sockjs.CLIENT_BUFFER_LIMIT:
                    # pusher-js has read past its buffer limit: it aborts this response
                    # and opens the next one. Anything written now would be lost; the
                    # queue waits for that next stream.
                    await http_session.wait_for_nudge(CHECK_INTERVAL)
                    if sink.gone:
                        return
                    continue
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
                written += sockjs.text_length(out)
                quiet_since = loop.time()
                # A poll answers once; a stream goes on until the session closes.
                if not streaming or http_session.close_frame is not None:
                    break
            # Everything taken is written: the client's next request may attach at once.
            http_session.release(sink, gone=False)
            await sink.end()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away; the session waits for its next request
        finally:
            http_session.release(sink, gone=True)
            if http_session.close_frame is not None and not len(http_session.outbox):
                await self._forget(http_session)

    def _confirm(self, http_session: HttpSession, transport: str) -> None:
        """The first receive request attached: the session becomes a connection, counted
        against the quotas now (a session that is only opened takes none)."""
        self.unconfirmed.discard(http_session.key)
        app = http_session.app
        code = self.node.refusal(app)
        if code is not None:
            self.node.counters(app).count_close(code)
            http_session.close(int(code), MESSAGES[code])
            return
        http_session.confirmed = True
        self.node.attach(http_session, transport)  # queues pusher:connection_established

    # -- relaying to the owner of a session (another process or machine) --------------------

    @property
    def _claim_ttl(self) -> float:
        return self.settings.session_timeout + 30.0

    async def _relay(
        self, key: str, owner: str, request: HttpRequest, stream: _Stream, number: int | None
    ) -> None:
        """Serve a receive request from the session's owner. The owner answers first with
        an HTTP status (403 for a request that is not the session's client), then bytes."""
        relay_id = secrets.token_hex(8)
        queue: asyncio.Queue[tuple[bytes, bool, int]] = asyncio.Queue()
        self.relays[relay_id] = queue
        self.relayed_for[relay_id] = (owner, key)
        me = self.node.broker.node_id
        responder = stream.responder
        patience = (
            self.settings.heartbeat_interval if stream.streaming else self.settings.poll_timeout
        ) + RELAY_GRACE
        loop = asyncio.get_running_loop()
        ended = False
        try:
            await self._to(
                owner,
                {
                    "t": "attach",
                    "k": key,
                    "r": relay_id,
                    "n": me,
                    "s": stream.streaming,
                    "o": request.headers.get("Origin"),
                    "ip": request.remote,
                    "q": number,
                },
            )
            heard_at = loop.time()
            while not ended:
                status = 200
                try:
                    data, ended, status = await asyncio.wait_for(queue.get(), CHECK_INTERVAL)
                    heard_at = loop.time()
                except TimeoutError:
                    if responder.gone:
                        return
                    if loop.time() - heard_at < patience:
                        continue
                    # The owner is gone: tell pusher-js to reconnect with a new session.
                    data = sockjs.close_frame(int(ErrorCode.RECONNECT), "Session lost")
                    ended = True
                if status != 200:
                    return await responder.respond(json_error(status, data.decode()))
                if not responder.started:
                    await stream.start()
                if data:
                    await responder.write(data)
            await responder.end()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            del self.relays[relay_id]
            del self.relayed_for[relay_id]
            if not ended:
                await self._to(owner, {"t": "detach", "k": key, "r": relay_id})

    async def _to(self, node_id: str, message: dict[str, Any]) -> None:
        await self.node.broker.control.to_node(node_id, orjson.dumps(message))

    def _receiver_done(self, relay_id: str) -> None:
        self.remote_receivers.pop(relay_id, None)

    async def on_node_message(self, payload: bytes) -> None:
        """Relay traffic from other nodes (see the module docstring)."""
        message = orjson.loads(payload)
        kind = message.get("t")
        if kind == "out":
            queue = self.relays.get(message["r"])
            if queue is not None:
                status = int(message.get("s", 200))
                queue.put_nowait((message["d"].encode(), bool(message["e"]), status))
            return
        http_session = self.sessions.get(message["k"])
        if kind == "send":
            if (
                http_session is not None
                and http_session.confirmed
                and http_session.binding.admits(message.get("o"), message.get("ip"))
            ):
                await self._deliver_sent(http_session, message["m"], _number(message))
        elif kind == "attach":
            sink = RelaySink(self, message["n"], message["r"])
            if http_session is None:
                await sink.write(sockjs.close_frame(int(ErrorCode.RECONNECT), "Session expired"))
                await sink.end()
                return
            if not http_session.binding.admits(message.get("o"), message.get("ip")):
                await sink.refuse(403, NOT_YOURS)
                return
            await self._apply(http_session, self._received(http_session, _number(message)))
            await sink.accept()  # the relaying node starts its response (and a stream's prelude)
            relay_id = message["r"]
            streaming = bool(message["s"])
            written = _PRELUDE if streaming else 0  # the relaying node wrote it
            task = spawn(self._serve(http_session, sink, streaming, written), "fallback relay")
            self.remote_receivers[relay_id] = task
            task.add_done_callback(lambda _: self._receiver_done(relay_id))
        elif kind == "detach":
            receiver = self.remote_receivers.pop(message["r"], None)
            if receiver is not None:
                receiver.cancel()
        elif kind == "drain":
            # The node relaying this session's receive request is stopping: the session
            # ends as that node's own do (4200, reconnect now), the close frame going out
            # through the relay while it is still there.
            attached = http_session.receiver if http_session is not None else None
            if (
                http_session is not None
                and isinstance(attached, RelaySink)
                and attached.relay_id == message["r"]
            ):
                self.node.counters(http_session.app).count_close(int(ErrorCode.RECONNECT))
                http_session.close(int(ErrorCode.RECONNECT), "Server shutting down")

    def _open(self, key: str, app: App, binding: ClientBinding, number: int | None) -> HttpSession:
        """A new session, unconfirmed: the node learns of it when a receive request
        attaches (:meth:`_confirm`). ``number``: the opening request's (pusher-js's ``n``)."""
        session = self.node.new_session(app)
        wait = self.settings.send_order_wait
        order = SendOrder(number, wait) if wait > 0 else None
        http_session = HttpSession(
            key,
            session,
            app,
            binding,
            self.settings.max_queue_bytes,
            self.node.outgoing,
            self.node.counters(app),
            order,
        )
        self.sessions[key] = http_session
        self.unconfirmed.add(key)
        return http_session

    async def _forget(self, http_session: HttpSession) -> None:
        if self.sessions.get(http_session.key) is not http_session:
            return
        del self.sessions[http_session.key]
        self.unconfirmed.discard(http_session.key)
        timer = self.order_timers.pop(http_session.key, None)
        if timer is not None:
            timer.cancel()  # the sends waiting for a gap go with the session
        http_session.close(int(ErrorCode.RECONNECT), "Session ended")
        if http_session.confirmed:  # else the node never knew it (socket ids may repeat)
            await self.node.detach(http_session)

    def _key(self, request: HttpRequest) -> str:
        info = request.params
        return f"{info['key']}/{info['server']}/{info['session']}"

    def _bad_name(self, request: HttpRequest) -> HttpResponse | None:
        """400 for a session name pusher-js could not have made (see protocol/sockjs.py)."""
        info = request.params
        problem = sockjs.session_name_error(info["server"], info["session"])
        return None if problem is None else json_error(400, problem)

    def _binding(self, request: HttpRequest) -> ClientBinding:
        ip = request.remote if self.settings.bind_ip else None
        return ClientBinding(request.headers.get("Origin"), ip)

    def _refusal(self, request: HttpRequest, app: App | None) -> tuple[ErrorCode, str] | None:
        return self.node.admission(
            app, request.query.get("protocol"), request.headers.get("Origin")
        )

    # -- expiry ------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        settings = self.settings
        unconfirmed_timeout = min(settings.unconfirmed_timeout, settings.session_timeout)
        interval = max(0.1, min(1.0, unconfirmed_timeout / 4))
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - last_refresh >= settings.session_timeout / 2:
                last_refresh = now
                await self.node.broker.claims.refresh(list(self.sessions), self._claim_ttl)
            for http_session in list(self.sessions.values()):
                detached = http_session.detached_at
                timeout = settings.session_timeout
                if not http_session.confirmed:
                    timeout = unconfirmed_timeout
                if detached is not None and now - detached >= timeout:
                    await self._forget(http_session)


def _number(message: dict[str, Any]) -> int | None:
    """The request number a relaying node read from the client's URL, if any."""
    number = message.get("q")
    return number if isinstance(number, int) else None


class RelaySink:
    """A receive request served here for a relaying node: bytes go back over the broker.

    The relaying node watches its client and sends ``detach`` when it goes away."""

    gone = False

    def __init__(self, fallback: HttpFallback, node_id: str, relay_id: str) -> None:
        self.fallback = fallback
        self.node_id = node_id
        self.relay_id = relay_id

    async def write(self, data: bytes) -> None:
        await self._out(data.decode(), False)

    async def end(self) -> None:
        await self._out("", True)

    async def accept(self) -> None:
        """Let the relaying node answer 200 now, before the first bytes."""
        await self._out("", False)

    async def refuse(self, status: int, message: str) -> None:
        """Answer the relaying node's client with an HTTP error instead."""
        await self._out(message, True, status)

    async def _out(self, data: str, ended: bool, status: int = 200) -> None:
        message = {"t": "out", "r": self.relay_id, "d": data, "e": ended, "s": status}
        await self.fallback._to(self.node_id, message)
