"""This process's subscribers, by channel, and the fan-out that writes to them.

The hot path: publications arrive as Pusher JSON messages, and the :class:`Coalescer`
hands each channel's run of them to its subscribers as one
:class:`~tidings.core.publication.Publication`, which encodes them once per kind of edge.
No per-recipient JSON, framing, task or future. A :data:`Writer` is the one place that loops
over sockets: :func:`write_to_many` here calls each subscriber's ``publish``; the server
passes the native writer from ``tidings.server.fanout`` instead, which writes the
publication's WebSocket frame straight to its sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol

from tidings.core.publication import Publication

log = logging.getLogger("tidings.hub")


class Subscriber(Protocol):
    """A connection as the hub sees it."""

    @property
    def socket_id(self) -> str: ...

    def publish(self, publication: Publication) -> None:
        """Queue ``publication`` in this edge's encoding without blocking; a slow consumer
        closes itself (4100)."""
        ...


# (publication, subscribers by socket id, socket id to leave out) -> how many were written
# to. A writer never raises for one subscriber: it logs the failure and writes to the others.
Writer = Callable[[Publication, dict[str, Subscriber], str | None], int]


def write_to_many(
    publication: Publication, subscribers: dict[str, Subscriber], exclude: str | None
) -> int:
    """Hand one publication to every subscriber but ``exclude``; returns how many took it.

    One subscriber whose ``publish`` raises is logged and skipped: it never keeps the
    publication from the others (a :data:`Writer` never raises for a subscriber)."""
    n = 0
    for socket_id, subscriber in list(subscribers.items()):
        if socket_id == exclude:
            continue
        try:
            subscriber.publish(publication)
        except Exception:
            log.exception("writing to %s failed", socket_id)
            continue
        n += 1
    return n


class Hub:
    """Local subscribers of one app's channels, keyed by socket id within a channel."""

    __slots__ = ("_channels", "_write", "_before_change")

    def __init__(
        self, write: Writer = write_to_many, before_change: Callable[[], None] | None = None
    ) -> None:
        self._channels: dict[str, dict[str, Subscriber]] = {}
        self._write = write
        # Called before anyone is added or removed: the node's Coalescer.flush, so that
        # publications made before a subscription change reach exactly the old subscribers.
        self._before_change = before_change

    def add(self, channel: str, subscriber: Subscriber) -> bool:
        """Add a subscriber; True when it is the channel's first local subscriber."""
        if self._before_change is not None:
            self._before_change()
        subscribers = self._channels.get(channel)
        if subscribers is None:
            self._channels[channel] = {subscriber.socket_id: subscriber}
            return True
        subscribers[subscriber.socket_id] = subscriber
        return False

    def remove(self, channel: str, socket_id: str) -> bool:
        """Remove a subscriber; True when the channel has no local subscriber left."""
        if self._before_change is not None:
            self._before_change()
        subscribers = self._channels.get(channel)
        if subscribers is None:
            return False
        subscribers.pop(socket_id, None)
        if subscribers:
            return False
        del self._channels[channel]
        return True

    def deliver(self, channel: str, publication: Publication, exclude: str | None = None) -> int:
        """Write ``publication`` to the channel's local subscribers but ``exclude``."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        return self._write(publication, subscribers, exclude)

    def contains(self, channel: str, socket_id: str) -> bool:
        subscribers = self._channels.get(channel)
        return subscribers is not None and socket_id in subscribers

    def count(self, channel: str) -> int:
        subscribers = self._channels.get(channel)
        return len(subscribers) if subscribers else 0

    def subscribers(self, channel: str) -> Iterator[Subscriber]:
        return iter(list(self._channels.get(channel, {}).values()))

    def channels(self) -> Iterator[str]:
        return iter(self._channels)


class Counted(Protocol):
    """Where delivered messages are counted (the node's per-app counters)."""

    deliveries: int
    bytes_out: int


class Coalescer:
    """Publications of one event-loop tick, written together at its end.

    Several publications to one channel in the same tick (a burst of REST triggers, a batch,
    a Redis read carrying many messages) become one :class:`Publication` and one write per
    subscriber, instead of one write each: the system call per socket is the cost of
    fan-out, so this divides it. Only *consecutive* publications to the same channel with
    the same excluded socket are joined, so every socket still sees messages in publication
    order.

    Whoever writes to a socket directly, or changes who is subscribed, calls :meth:`flush`
    first: a socket then sees exactly what it would have seen had every publication been
    written the moment it was made.
    """

    __slots__ = ("_pending", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._pending: list[tuple[Hub, str, bytes, str | None, Counted]] = []  # messages
        self._schedule = schedule  # e.g. loop.call_soon
        self._scheduled = False

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self, hub: Hub, channel: str, message: bytes, exclude: str | None, counters: Counted
    ) -> None:
        """Queue one Pusher message for ``channel``'s subscribers but ``exclude``."""
        self._pending.append((hub, channel, message, exclude, counters))
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self._on_tick)

    def _on_tick(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        start = 0
        while start < len(pending):
            hub, channel, message, exclude, counters = pending[start]
            end = start + 1
            while end < len(pending) and _same_target(pending[end], pending[start]):
                end += 1
            if end - start > 1:
                publication = Publication([p[2] for p in pending[start:end]])
            else:
                publication = Publication([message])
            try:
                written = hub.deliver(channel, publication, exclude)
            except Exception:  # a writer that broke its contract: the next channels still go
                log.exception("delivering to %s failed", channel)
                written = 0
            if written:
                counters.deliveries += written * (end - start)
                counters.bytes_out += written * publication.size
            start = end


def _same_target(
    a: tuple[Hub, str, bytes, str | None, Counted], b: tuple[Hub, str, bytes, str | None, Counted]
) -> bool:
    return a[0] is b[0] and a[1] == b[1] and a[3] == b[3]
