"""One HTTP fallback session: its queue, its one receiver and the client it belongs to.

A session is a Pusher connection whose bytes wait in a bounded
:class:`~tidings.core.outbox.Outbox` between receive requests. It belongs to the client that
opened it: its name is chosen by the client and is the only secret, so later requests must
also show the opener's ``Origin`` (and, when bound, address) (:class:`ClientBinding`), and
only one receive request at a time may take its messages (:meth:`HttpSession.take_receiver`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tidings.core.apps import App
from tidings.core.connection import SLOW_CONSUMER, ConnectionBase
from tidings.core.hub import Coalescer
from tidings.core.outbox import Outbox
from tidings.core.publication import Publication
from tidings.core.send_order import SendOrder
from tidings.node import AppCounters
from tidings.protocol import sockjs
from tidings.protocol.errors import ErrorCode
from tidings.protocol.session import Session

log = logging.getLogger("tidings.fallback")

CHECK_INTERVAL = 1.0  # seconds between checks that a waiting client is still there

# How long a second receive request waits for the first one's client to turn out gone.
# pusher-js aborts its stream and opens a new one on the same session when the response
# passes 256 KiB (http_request.ts, buffer_too_long); the server notices the abort within
# CHECK_INTERVAL locally, a relaying node within CHECK_INTERVAL plus a broker hop.
TAKEOVER_WAIT = 3 * CHECK_INTERVAL


class Sink(Protocol):
    """Where a receive request's bytes go: a local HTTP response (a started
    ``http_edge.Responder``) or a relaying node."""

    @property
    def gone(self) -> bool:
        """The client went away (pusher-js aborted the request or the connection dropped)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientBinding:
    """What the opener of a session showed: its ``Origin`` header and, when sessions are
    bound to addresses, its IP. Every later request must show the same."""

    origin: str | None
    ip: str | None  # None: not bound to an address

    def admits(self, origin: str | None, ip: str | None) -> bool:
        return origin == self.origin and (self.ip is None or ip == self.ip)


class HttpSession(ConnectionBase):
    """One pusher-js HTTP session; implements the node's ``Connection`` once confirmed.

    ``send`` and ``publish`` queue the raw messages: the Coalescer counts the bytes of
    publications, and direct messages go uncounted, as on the ASGI edge.
    """

    __slots__ = (
        "closing",
        "counters",
        "_outgoing",
        "socket_id",
        "session",
        "app",
        "key",
        "binding",
        "outbox",
        "close_frame",
        "close_taken",
        "detached_at",
        "confirmed",
        "receiver",
        "waiting",
        "_released",
        "_released_gone",
        "_wake",
        "_nudged",
        "sending",
        "order",
    )

    def __init__(
        self,
        key: str,
        session: Session,
        app: App,
        binding: ClientBinding,
        max_queue_bytes: int,
        outgoing: Coalescer,
        counters: AppCounters,
        order: SendOrder | None = None,
    ) -> None:
        super().__init__(outgoing, counters)
        self.key = key
        self.socket_id = session.socket_id
        self.session = session
        self.app = app
        self.binding = binding
        self.outbox = Outbox(max_queue_bytes)
        self.close_frame: bytes | None = None
        self.close_taken = False  # the close frame went out in a receive request's answer
        self.detached_at: float | None = time.monotonic()
        self.confirmed = False  # a receive request has attached: the node knows it
        self.receiver: Sink | None = None  # the one receive request attached, if any
        self.waiting = False  # a second receive request waits for the first to go
        # Futures made only while someone waits, not Events: three Events (a deque each)
        # were ~2 KiB of every idle session, and waiting on one with wait_for made a task
        # per CHECK_INTERVAL (docs/benchmarks.md, the fallback's per-session cost).
        self._released: asyncio.Future[None] | None = None  # a second receiver waits
        self._released_gone = False
        self._wake: asyncio.Future[None] | None = None  # the receiver waits for bytes
        self._nudged: asyncio.Future[None] | None = None  # the receiver waits past its limit
        # pusher-js posts each message in an xhr_send of its own, without waiting for the
        # one before: the node takes them one at a time, in arrival order, as it takes a
        # WebSocket's frames (a ``before`` hook that awaits must not let the next overtake).
        self.sending = asyncio.Lock()
        # With Redis, a send relayed through another node can arrive after a later one
        # posted to this node directly: sends are applied in the client's numbering.
        self.order = order

    # -- the one receiver ----------------------------------------------------------------

    async def take_receiver(self, sink: Sink) -> bool:
        """Attach ``sink`` as the receiver, or False: another one is attached.

        One may wait (TAKEOVER_WAIT) for the attached one to be released because its client
        went away: pusher-js's own stream reconnect. A receiver that ends normally (a poll
        answered) does not hand over, or a request parked on someone else's session would
        take every other batch."""
        if self.receiver is None:
            self._attach(sink)
            return True
        if self.waiting:
            return False
        self.waiting = True
        _resolve(self._wake)  # the attached receiver checks its client at once
        _resolve(self._nudged)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(TAKEOVER_WAIT):
                while True:
                    self._released = loop.create_future()
                    await self._released
                    if self.receiver is None and self._released_gone:
                        self._attach(sink)
                        return True
                    if self.receiver is None:
                        return False
        except TimeoutError:
            return False
        finally:
            self.waiting = False
            self._released = None

    def _attach(self, sink: Sink) -> None:
        self.receiver = sink
        self.detached_at = None

    def release(self, sink: Sink, gone: bool) -> None:
        """``sink`` is done (``gone``: its client went away); no-op if it is not attached."""
        if self.receiver is not sink:
            return
        self.receiver = None
        self.detached_at = time.monotonic()
        self._released_gone = gone
        _resolve(self._released)

    def _write(self, message: bytes) -> None:
        """Queue one message for this session alone."""
        self._queue((message,))

    def _publish(self, publication: Publication) -> None:
        """Queue a publication's messages as they are (one loop tick's, in order)."""
        self._queue(publication.messages)

    def _queue(self, messages: Iterable[bytes]) -> None:
        for message in messages:
            if not self.outbox.push(message):
                # The client stopped polling or reading: a slow consumer, as on WebSocket.
                self.slow_consumer()
                return
        _resolve(self._wake)

    def _closed(self, code: int, reason: str) -> None:
        """The close frame waits for the next receive request, after what is queued."""
        self.session.closed = True
        self.close_frame = sockjs.close_frame(code, reason)
        _resolve(self._wake)

    def _drop_slow(self) -> None:
        """What is queued is dropped: the client gets the 4100 alone."""
        log.warning("closed slow HTTP session %s (app %s)", self.socket_id, self.app.id)
        self.outbox.drain()
        self._closed(int(ErrorCode.OVER_CAPACITY), SLOW_CONSUMER)

    async def wait_for_nudge(self, timeout: float) -> None:
        """Until another receive request waits for this session, or ``timeout`` passes."""
        self._nudged = asyncio.get_running_loop().create_future()
        try:
            await _until_done(self._nudged, timeout)
        finally:
            self._nudged = None

    async def wait(self, timeout: float) -> None:
        """Until there is something to send or ``timeout`` passes."""
        if len(self.outbox) or self.close_frame is not None:
            return
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await _until_done(self._wake, timeout)
        finally:
            self._wake = None

    def take(self) -> bytes:
        """The frames to write now: queued messages, then the close frame if any."""
        out = b""
        if len(self.outbox):
            out += sockjs.messages_frame(self.outbox.drain())
        if self.close_frame is not None:
            out += self.close_frame
            self.close_taken = True
        return out

    @property
    def owes_close(self) -> bool:
        """Closed, but its client has not collected the close frame yet."""
        return self.close_frame is not None and not self.close_taken


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    """Wake whoever waits on ``waiter`` (nobody: a no-op, as setting an unwatched Event)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _until_done(waiter: asyncio.Future[None], timeout: float) -> None:
    """Until ``waiter`` is resolved or ``timeout`` passes: a timer, not a task per wait."""
    timer = asyncio.get_running_loop().call_later(timeout, _resolve, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
