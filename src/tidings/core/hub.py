"""This process's subscribers, by channel, and the fan-out that writes to them.

The hot path: a publication arrives as one pre-built frame (``bytes``) and the same
object is written to every local subscriber. No per-recipient JSON, framing, task or
future. :func:`write_to_many` is the one place that loops over sockets, so a native
implementation can replace it without touching anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class Subscriber(Protocol):
    """A connection as the hub sees it."""

    @property
    def socket_id(self) -> str: ...

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` without blocking; a slow consumer closes itself (4100)."""
        ...


def write_to_many(frame: bytes, subscribers: Iterable[Subscriber]) -> int:
    """Write one frame to every subscriber; returns how many were written to."""
    n = 0
    for subscriber in subscribers:
        subscriber.send(frame)
        n += 1
    return n


class Hub:
    """Local subscribers of one app's channels, keyed by socket id within a channel."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, Subscriber]] = {}

    def add(self, channel: str, subscriber: Subscriber) -> bool:
        """Add a subscriber; True when it is the channel's first local subscriber."""
        subscribers = self._channels.get(channel)
        if subscribers is None:
            self._channels[channel] = {subscriber.socket_id: subscriber}
            return True
        subscribers[subscriber.socket_id] = subscriber
        return False

    def remove(self, channel: str, socket_id: str) -> bool:
        """Remove a subscriber; True when the channel has no local subscriber left."""
        subscribers = self._channels.get(channel)
        if subscribers is None:
            return False
        subscribers.pop(socket_id, None)
        if subscribers:
            return False
        del self._channels[channel]
        return True

    def deliver(self, channel: str, frame: bytes, exclude: str | None = None) -> int:
        """Write ``frame`` to the channel's local subscribers but ``exclude``."""
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        if exclude is None or exclude not in subscribers:
            return write_to_many(frame, subscribers.values())
        return write_to_many(frame, (s for k, s in subscribers.items() if k != exclude))

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
