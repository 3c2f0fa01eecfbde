"""The WebSocket edge under ASGI: ``/app/{key}``, messages in, node, messages out.

The hub hands every subscriber of a publication the same
:class:`~tidings.core.publication.Publication`. ASGI wants ``str`` text, so
:class:`TextMessages` wraps the publication's shared ``texts`` in ``websocket.send``
messages once per publication, not once per recipient, and every connection sends the same
message objects.

Each socket's ASGI ``send`` is driven by hand: called, and stepped once. Servers complete
it without suspending while the socket keeps up (uvicorn only suspends while its transport
is paused), so a delivery costs one call and no task. Only a send that suspends is parked
in a task; the messages that follow wait behind it in a bounded deque, and when the deque
holds more than ``max_write_buffer`` bytes the client is a slow consumer, closed with 4100.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, MutableMapping
from types import CoroutineType
from typing import Any
from urllib.parse import parse_qs

from tidings.core.apps import App
from tidings.core.connection import SLOW_CONSUMER, ConnectionBase
from tidings.core.hub import Coalescer
from tidings.core.publication import Publication
from tidings.node import AppCounters, Node
from tidings.protocol import messages
from tidings.protocol.errors import MESSAGES, ErrorCode
from tidings.protocol.frames import close_reason
from tidings.protocol.session import Session
from tidings.tasks import report_failure

log = logging.getLogger("tidings.asgi")
trace = logging.getLogger("tidings.debug")  # what clients do (`--debug`), see node.py

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLOSE_WAIT = 2.0  # seconds a stop waits for the detaches of slow consumers


class TextMessages:
    """Publications as ASGI ``websocket.send`` messages, made once per publication.

    The hub hands one :class:`Publication` to every subscriber, so the last conversion is
    kept by identity: the first recipient of a publication pays for it, the others reuse
    it. A coalesced publication holds several messages: each becomes its own ASGI message,
    in order. The messages are shared by every recipient, so a server or middleware must
    not change them (none does: they only read ``text``).
    """

    __slots__ = ("publication", "messages")

    def __init__(self) -> None:
        # The last publication converted, and its messages (read them only).
        self.publication: Publication | None = None
        self.messages: tuple[Message, ...] = ()

    def of(self, publication: Publication) -> tuple[Message, ...]:
        if publication is not self.publication:
            # Keeping a reference to the publication keeps its identity from being reused.
            self.messages = tuple(
                {"type": "websocket.send", "text": text} for text in publication.texts
            )
            self.publication = publication
        return self.messages


class _Resumed:
    """Awaiting this resumes ``coroutine`` where it first suspended (on ``signal``).

    A coroutine stepped by hand cannot be handed to a task as it is: its first suspension
    already happened outside any task. This passes that suspension, then every later one,
    on to the task that awaits it, and the task's answers back in.
    """

    __slots__ = ("_coroutine", "_signal")

    def __init__(self, coroutine: Coroutine[Any, Any, None], signal: Any) -> None:
        self._coroutine = coroutine
        self._signal = signal

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, signal = self._coroutine, self._signal
        while True:
            try:
                answer = yield signal
            except BaseException as exc:  # cancellation included: the coroutine decides
                try:
                    signal = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    signal = coroutine.send(answer)
                except StopIteration:
                    return


class AsgiConnection(ConnectionBase):
    """One client socket served through ASGI; implements the node's ``Connection`` (and the
    hub's ``Subscriber``).

    ``send`` takes a message for this socket alone, ``publish`` a publication from the
    hub's writer. Each becomes ASGI messages, sent in order; nothing is written after
    ``close`` or once the socket is known to be gone.

    Any writer serves it: ``write_to_many``, or the native writer of ``tidings serve`` when
    one node serves both (it hands what is not a file descriptor ``publish``). No bytes are
    counted here: the Coalescer counts publications, and direct messages go uncounted, as
    for the HTTP fallback sessions.
    """

    __slots__ = (
        "closing",
        "counters",
        "_outgoing",
        "socket_id",
        "session",
        "app",
        "closed_with",
        "_send",
        "_messages",
        "_max_backlog",
        "_backlog",
        "_backlog_size",
        "_parked",
        "_on_slow",
    )

    def __init__(
        self,
        session: Session,
        app: App,
        send: Send,
        texts: TextMessages,
        outgoing: Coalescer,
        counters: AppCounters,
        max_backlog: int,
        on_slow: Callable[[AsgiConnection], None],
    ) -> None:
        super().__init__(outgoing, counters)
        self.socket_id = session.socket_id
        self.session = session
        self.app = app
        # The code and reason the server closed it with, for the debug log (None: it did not).
        self.closed_with: tuple[int, str] | None = None
        self._send = send
        self._messages = texts
        self._max_backlog = max_backlog
        # Messages waiting behind a parked send; None while nothing is parked (no queue per
        # connection otherwise).
        self._backlog: deque[Message] | None = None
        self._backlog_size = 0  # characters of text waiting in the backlog
        self._parked: asyncio.Task[None] | None = None
        self._on_slow = on_slow  # the edge forgets a slow consumer at once

    def _write(self, message: bytes) -> None:
        """A message for this socket alone, as ASGI text."""
        self._push({"type": "websocket.send", "text": message.decode()})

    def _publish(self, publication: Publication) -> None:
        """A publication's messages, shared with its other recipients on this edge."""
        texts = self._messages
        # Every recipient of a publication but the first finds its messages ready: taken in
        # place, they cost no call (this is the per-delivery path of the ASGI edge).
        for message in (
            texts.messages if publication is texts.publication else texts.of(publication)
        ):
            if self.closing:
                return
            self._push(message)

    def _closed(self, code: int, reason: str) -> None:
        """The close message goes after everything sent so far."""
        self.closed_with = (code, reason)
        self._push(
            {"type": "websocket.close", "code": code, "reason": close_reason(reason).decode()}
        )

    @property
    def sending(self) -> asyncio.Task[None] | None:
        """The task of a send that suspended, while it and the backlog behind it run."""
        return self._parked

    def _push(self, message: Message) -> None:
        backlog = self._backlog
        if backlog is not None:  # a send is parked: wait behind it
            backlog.append(message)
            self._backlog_size += len(message.get("text", ""))
            if self._backlog_size > self._max_backlog:
                self.slow_consumer()
            return
        try:
            coroutine = self._send(message)
            if not isinstance(coroutine, CoroutineType):  # an awaitable that is no coroutine
                self._park(coroutine)
                return
            signal = coroutine.send(None)
        except StopIteration:
            return  # sent without suspending: the common case
        except Exception as exc:
            self._gone(exc)
            return
        self._park(_Resumed(coroutine, signal))

    def _park(self, suspended: Awaitable[None]) -> None:
        backlog: deque[Message] = deque()
        self._backlog = backlog
        task = asyncio.get_running_loop().create_task(
            self._send_backlog(suspended, backlog), name=f"asgi send {self.socket_id}"
        )
        task.add_done_callback(report_failure)
        self._parked = task

    async def _send_backlog(self, suspended: Awaitable[None], backlog: deque[Message]) -> None:
        try:
            await suspended
            while backlog:
                message = backlog.popleft()
                self._backlog_size -= len(message.get("text", ""))
                await self._send(message)
        except Exception as exc:
            self._gone(exc)  # what still waits is dropped below
        finally:
            self._parked = None
            self._backlog = None
            self._backlog_size = 0

    def _gone(self, exc: Exception) -> None:
        """The server refused a send (the peer went away): never write to it again."""
        log.debug("sending to %s failed: %r", self.socket_id, exc)
        self.closing = True

    def _drop_slow(self) -> None:
        """Drop what waits behind the parked send (only a backlog overflows), and say 4100
        once the client reads again."""
        code = int(ErrorCode.OVER_CAPACITY)
        self.closed_with = (code, SLOW_CONSUMER)
        if self._backlog is not None:
            self._backlog.clear()
            self._backlog_size = 0
        reason = close_reason(SLOW_CONSUMER).decode()
        self._push({"type": "websocket.close", "code": code, "reason": reason})
        log.warning("closed slow consumer %s (app %s)", self.socket_id, self.app.id)
        self._on_slow(self)


class WebSocketEndpoint:
    """Admission, then the receive loop of one ``/app/{key}`` socket at a time; a
    ``lifecycle.Edge``, added to the node's ``Lifecycle`` by ``TidingsASGI``."""

    def __init__(self, node: Node, max_write_buffer: int) -> None:
        self.node = node
        self.max_write_buffer = max_write_buffer
        self.messages = TextMessages()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send, key: str | None) -> None:
        """Serve one WebSocket scope; ``key`` is None for a path under /app that is not
        ``/app/{key}`` (Pusher: 4005, path not found)."""
        if (await receive())["type"] != "websocket.connect":
            return  # the client left before the handshake
        node = self.node
        app = node.apps.by_key(key) if key is not None else None
        if not node.take_connection_slot(app):
            await _connection_rate_exceeded(scope, send)
            return
        await send({"type": "websocket.accept"})
        refusal: tuple[ErrorCode, str] | None
        if key is None:
            refusal = ErrorCode.PATH_NOT_FOUND, MESSAGES[ErrorCode.PATH_NOT_FOUND]
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), True)
            protocol = query.get("protocol", [None])[0]
            refusal = node.admission(app, protocol, _header(scope, b"origin"))
        if refusal is not None or app is None:
            code, text = refusal or (ErrorCode.APP_NOT_FOUND, MESSAGES[ErrorCode.APP_NOT_FOUND])
            await _refuse(send, node.counters_for(app), code, text)
            return
        await self._serve(app, receive, send)

    async def _serve(self, app: App, receive: Receive, send: Send) -> None:
        node = self.node
        counters = node.counters(app)
        connection = AsgiConnection(
            node.new_session(app),
            app,
            send,
            self.messages,
            node.outgoing,
            counters,
            self.max_write_buffer,
            self._forget,
        )
        node.attach(connection, "asgi-ws")
        limit = app.max_message_bytes
        client_code = None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    client_code = message.get("code")
                    break
                if kind != "websocket.receive" or connection.closing:
                    continue  # closing: wait for the server's disconnect, read nothing more
                text = message.get("text")
                if text is None:
                    # Pusher: "Binary WebSocket frames are not supported."
                    counters.count_error(None)
                    connection.send(messages.error("binary frames are not supported"))
                elif len(text) > limit or (not text.isascii() and len(text.encode()) > limit):
                    # RFC 6455 7.4.1: 1009, a message too big to process.
                    counters.count_close(1009)
                    connection.close(1009, "Message too big")
                else:
                    await node.receive(connection, text)
        except Exception:
            log.exception("connection %s failed", connection.socket_id)
        finally:
            if trace.isEnabledFor(logging.DEBUG):
                _trace_end(connection, client_code)
            await node.detach(connection, client_code)
            parked = connection.sending
            if parked is not None:
                parked.cancel()  # the socket is gone: nothing it waits for will come

    def _forget(self, connection: AsgiConnection) -> None:
        """A slow consumer leaves its channels now, not when its client next reads."""
        task = asyncio.ensure_future(self.node.detach(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(report_failure)

    async def start(self) -> None:
        """Nothing to start: sockets arrive through the ASGI server's listener."""

    async def stop_accepting(self) -> None:
        """Nothing here: the ASGI server owns the listener (and a draining node refuses new
        sockets with 4200)."""

    async def drain(self, grace: float) -> None:
        """Nothing to hand over: every socket was sent its 4200 as the node drained."""

    async def close(self) -> None:
        """Before the node stops: let the detaches of slow consumers finish."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT)


def _trace_end(connection: AsgiConnection, client_code: int | None) -> None:
    """The debug line of a socket that ended, saying which side closed it (as the aiohttp
    edge does)."""
    if connection.closed_with is not None:
        code, why = connection.closed_with
        trace.debug(
            "connection %s ended: closed by the server, code %s (%s)",
            connection.socket_id,
            code,
            why,
        )
    else:
        trace.debug(
            "connection %s ended: closed by the client, code %s",
            connection.socket_id,
            client_code,
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, counters: AppCounters, code: ErrorCode, text: str) -> None:
    """As the aiohttp edge: pusher:error with the code, then close with it."""
    counters.count_error(code)
    counters.count_close(code)
    await send({"type": "websocket.send", "text": messages.error(text, code).decode()})
    reason = close_reason(text).decode()
    await send({"type": "websocket.close", "code": int(code), "reason": reason})


async def _connection_rate_exceeded(scope: Scope, send: Send) -> None:
    """503 before any upgrade (``max_connection_rate``), where the server can answer HTTP
    to a WebSocket request (the ASGI ``websocket.http.response`` extension); else the
    handshake is refused (403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1013})
        return
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    body = b'{"error":"Too many new connections; retry in a second"}'
    await send({"type": "websocket.http.response.body", "body": body})
