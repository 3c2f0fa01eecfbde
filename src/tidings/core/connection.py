"""What every client connection does the same way, whichever edge serves it.

The aiohttp WebSocket edge, the HTTP fallback and the ASGI edge each implement the node's
``Connection``. Three rules are the same for all of them and live here once:

- **flush before a direct write**: a message for this connection alone (a reply, an error,
  a member event) goes out after every publication made before it, so the node's
  :class:`~tidings.core.hub.Coalescer` is flushed first;
- **framing at the edge**: the node hands over Pusher JSON messages (``send``) and
  :class:`~tidings.core.publication.Publication` objects (``publish``); each edge writes
  them in its own encoding (a WebSocket frame, an ASGI ``str``, the raw message);
- **close once**: the first ``close`` or slow-consumer verdict wins; after it nothing more is
  written and later closes are no-ops;
- **counters from the constructor**: the app's counters arrive with the connection, so no
  write path checks for ``None``.

:class:`ConnectionBase` declares no slots of its own (``__slots__ = ()``): the WebSocket
connection is also the native writer's ``Sink``, a C type with its own instance layout, and
Python refuses a second base with a non-empty layout ("multiple bases have instance lay-out
conflict"). Each subclass lists ``counters``, ``_outgoing`` and, unless a base provides it,
``closing`` in its own ``__slots__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from tidings.core.counters import AppCounters
from tidings.core.hub import Coalescer
from tidings.core.publication import Publication
from tidings.protocol.session import Session

SLOW_CONSUMER = "Slow consumer"  # the reason sent with 4100, by every edge


class ConnectionBase(ABC):
    """The shared half of a client connection; an edge supplies :meth:`_write`,
    :meth:`_publish`, :meth:`_closed` and :meth:`_drop_slow`.

    ``send`` is the direct path: it checks ``closing``, flushes a non-empty Coalescer and
    hands the message on. ``publish`` is the path every publication takes on edges that are
    not a native ``Sink``: it comes from the Coalescer's flush, which took everything pending
    before writing, so there is nothing to flush.
    """

    if not TYPE_CHECKING:
        # Hidden from mypy, which would refuse the assignments below: the storage for these
        # attributes is each subclass's (see the module docstring).
        __slots__ = ()

    socket_id: str
    session: Session
    closing: bool  # nothing more is written; set once, never cleared
    counters: AppCounters  # the app's: slow consumers here, direct bytes on WebSocket
    _outgoing: Coalescer

    def __init__(self, outgoing: Coalescer, counters: AppCounters) -> None:
        self._outgoing = outgoing
        self.counters = counters
        self.closing = False

    def send(self, message: bytes) -> None:
        """Write one Pusher message, after the publications made before it; nothing once
        closing."""
        if self.closing:
            return
        if self._outgoing:
            self._outgoing.flush()  # publications made before this message go first
        self._write(message)

    def publish(self, publication: Publication) -> None:
        """Write a publication (from the hub's writer); nothing once closing."""
        if not self.closing:
            self._publish(publication)

    def close(self, code: int, reason: str) -> None:
        """Close with ``code`` after everything sent so far; only the first call counts."""
        if self.closing:
            return
        if self._outgoing:
            self._outgoing.flush()
        self.closing = True
        self._closed(code, reason)

    def slow_consumer(self) -> None:
        """The client stopped reading (its unsent bytes passed the edge's bound): stop
        writing, count it, and drop it with 4100 (Pusher: over capacity, reconnect later).

        Nothing is flushed first: what is still unsent is dropped anyway."""
        if self.closing:
            return
        self.closing = True
        self.session.closed = True
        self.counters.slow_consumers += 1
        self._drop_slow()

    @abstractmethod
    def _write(self, message: bytes) -> None:
        """Hand one Pusher message to the client, framed for this edge; ``closing`` is
        False when called."""

    @abstractmethod
    def _publish(self, publication: Publication) -> None:
        """Hand a publication's messages to the client, in the encoding this edge shares
        with the other recipients; ``closing`` is False when called."""

    @abstractmethod
    def _closed(self, code: int, reason: str) -> None:
        """Close the client's connection; ``closing`` is already True, the Coalescer
        flushed."""

    @abstractmethod
    def _drop_slow(self) -> None:
        """Tell the slow client 4100 if it can still read it, and free what it held;
        ``closing`` is already True and the slow consumer counted."""
