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
    """Local subscribers of one app's channels, keyed by socket id within a channel.

    A channel's subscribers are two disjoint sets: stock ones, written the publication as
    published, and *positioned* ones (opted in to recovery on a channel with history),
    written :attr:`Publication.positioned`. Each set is one writer call, so both keep the
    encode-once fan-out; a channel nobody opted in to costs one more dict lookup."""

    __slots__ = ("_channels", "_positioned", "_write", "_before_change")

    def __init__(
        self, write: Writer = write_to_many, before_change: Callable[[], None] | None = None
    ) -> None:
        self._channels: dict[str, dict[str, Subscriber]] = {}
        self._positioned: dict[str, dict[str, Subscriber]] = {}
        self._write = write
        # Called before anyone is added or removed: the node's Coalescer.flush, so that
        # publications made before a subscription change reach exactly the old subscribers.
        self._before_change = before_change

    def add(self, channel: str, subscriber: Subscriber, positioned: bool = False) -> bool:
        """Add a subscriber (replacing one with its socket id, in either set); True when it
        is the channel's first local subscriber."""
        if self._before_change is not None:
            self._before_change()
        first = channel not in self._channels and channel not in self._positioned
        socket_id = subscriber.socket_id
        into, other = (
            (self._positioned, self._channels) if positioned else (self._channels, self._positioned)
        )
        _discard(other, channel, socket_id)
        into.setdefault(channel, {})[socket_id] = subscriber
        return first

    def remove(self, channel: str, socket_id: str) -> bool:
        """Remove a subscriber; True when the channel has no local subscriber left."""
        if self._before_change is not None:
            self._before_change()
        if channel not in self._channels and channel not in self._positioned:
            return False
        _discard(self._channels, channel, socket_id)
        _discard(self._positioned, channel, socket_id)
        return channel not in self._channels and channel not in self._positioned

    def deliver(self, channel: str, publication: Publication, exclude: str | None = None) -> int:
        """Write ``publication`` to the channel's local subscribers but ``exclude``."""
        n = 0
        subscribers = self._channels.get(channel)
        if subscribers:
            n = self._write(publication, subscribers, exclude)
        positioned = self._positioned.get(channel)
        if positioned:
            n += self._write(publication.positioned, positioned, exclude)
        return n

    def may_reach(self, channel: str) -> bool:
        """Whether a publication to ``channel`` queued now can reach anyone: False when the
        channel has no local subscriber and ``before_change`` flushes the queue before any
        is added (then the subscribers it is written to are none, whatever comes next)."""
        return (
            channel in self._channels or channel in self._positioned or self._before_change is None
        )

    def contains(self, channel: str, socket_id: str) -> bool:
        return socket_id in self._channels.get(channel, ()) or socket_id in self._positioned.get(
            channel, ()
        )

    def is_positioned(self, channel: str, socket_id: str) -> bool:
        return socket_id in self._positioned.get(channel, ())

    def count(self, channel: str) -> int:
        return len(self._channels.get(channel, ())) + len(self._positioned.get(channel, ()))

    def subscribers(self, channel: str) -> Iterator[Subscriber]:
        stock = list(self._channels.get(channel, {}).values())
        return iter(stock + list(self._positioned.get(channel, {}).values()))

    def positioned_subscribers(self, channel: str) -> Iterator[Subscriber]:
        return iter(list(self._positioned.get(channel, {}).values()))

    def channels(self) -> Iterator[str]:
        if not self._positioned:
            return iter(self._channels)
        return iter(self._channels.keys() | self._positioned.keys())


def _discard(sets: dict[str, dict[str, Subscriber]], channel: str, socket_id: str) -> None:
    subscribers = sets.get(channel)
    if subscribers is not None and subscribers.pop(socket_id, None) is not None:
        if not subscribers:
            del sets[channel]


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
        self._pending: list[_Pending] = []  # messages
        self._schedule = schedule  # e.g. loop.call_soon
        self._scheduled = False

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self,
        hub: Hub,
        channel: str,
        message: bytes,
        exclude: str | None,
        counters: Counted,
        offset: int | None = None,
    ) -> None:
        """Queue one Pusher message for ``channel``'s subscribers but ``exclude``;
        ``offset``: its place in the channel's history, if it has one."""
        if not hub.may_reach(channel):
            return  # a channel nobody here subscribes to (most REST triggers): no tick
        self._pending.append((hub, channel, message, exclude, counters, offset))
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
            hub, channel, message, exclude, counters, offset = pending[start]
            end = start + 1
            while end < len(pending) and _same_target(pending[end], pending[start]):
                end += 1
            if end - start > 1:
                run = pending[start:end]
                offsets = [p[5] for p in run]
                publication = Publication(
                    [p[2] for p in run], offsets if any(o is not None for o in offsets) else None
                )
            else:
                publication = Publication([message], None if offset is None else [offset])
            try:
                written = hub.deliver(channel, publication, exclude)
            except Exception:  # a writer that broke its contract: the next channels still go
                log.exception("delivering to %s failed", channel)
                written = 0
            if written:
                counters.deliveries += written * (end - start)
                counters.bytes_out += written * publication.size
            start = end


# (hub, channel, message, exclude, counters, offset)
_Pending = tuple[Hub, str, bytes, str | None, Counted, int | None]


def _same_target(a: _Pending, b: _Pending) -> bool:
    return a[0] is b[0] and a[1] == b[1] and a[3] == b[3]
