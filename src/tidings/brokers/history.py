"""Channel history: a bounded, expiring stream of a channel's publications, with positions.

A channel whose app enables history (``history`` rules, docs/history.md) keeps its last
``size`` publications for ``ttl`` seconds after the last one. Every publication gets the
next *offset* (1, 2, 3, ...) in the channel's *epoch*; ``(epoch, offset)`` is a
:class:`Position`. A client that remembers a position asks for everything after it
(:meth:`History.since`) and learns whether that is all of it (``complete``).

The epoch is the stream's identity: it is new whenever offsets could restart or entries
could be lost without a trace (a new process for memory, a Redis that lost its data, a meta
record that expired). A position from another epoch says nothing about this stream, so a
client holding one must re-fetch. The epoch and the top offset (the meta) outlive the
stream itself by far (:data:`META_TTL`): after a quiet spell longer than ``ttl`` the stream
is gone but the top offset is not, so a client that missed nothing still recovers
(centrifugo#230), and one that missed something is told it cannot.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

META_TTL = 30 * 24 * 3600.0
"""Seconds a channel's epoch and top offset live after its last publication or read."""

MAX_EPOCH_LENGTH = 32  # what a bus message or a client may carry as an epoch


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's stream stands: its epoch and the offset of its newest publication
    (0: none yet in this epoch)."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored publication."""

    offset: int
    message: bytes  # the Pusher event JSON exactly as published (unframed)
    exclude: str | None  # the socket_id that must not receive it (Pusher: the sender)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What :meth:`History.since` found."""

    position: Position  # the channel's position now
    events: list[Stored]  # offsets > since, ascending, at most ``limit``
    # True iff nothing after ``since`` and before the first event (or the top, when events
    # is empty) was trimmed or expired: the events are exactly what followed ``since``.
    complete: bool


def new_epoch() -> str:
    """A short random epoch: 8 hex digits, drawn for every stream that starts over (a
    collision between two epochs of one channel: one in four billion)."""
    return secrets.token_hex(4)


class HistoryUnavailable(Exception):
    """The history cannot be read: the shared backend is unreachable (degraded)."""


def page(position: Position, since: int, events: list[Stored]) -> HistoryPage:
    """The page for ``events`` read after ``since``: complete when they start right after it
    (or, when there are none, when ``since`` is the top). An offset above the top cannot come
    from this epoch's stream, so it is never complete."""
    if events:
        complete = events[0].offset == since + 1
    else:
        complete = since == position.offset
    return HistoryPage(position, events, complete and since <= position.offset)


class History(Protocol):
    """Per-channel history (channel state, beside the cache), held by ``broker.history``.

    Ordering: a channel's offsets are assigned in one total order (the process's for
    memory, Redis's for Redis), and every node is handed a channel's positioned
    publications in that order.
    Delivery: as pub/sub, at most once per node; what a node misses is in the stream, and
    the offsets let it notice (a jump) and fill the hole with :meth:`since`.
    Failure, while degraded: :meth:`publish` delivers to this node's subscribers without a
    position and keeps nothing (other nodes miss it, as with pub/sub); :meth:`position`,
    :meth:`positions` and :meth:`since` raise :class:`HistoryUnavailable`, the only calls
    of the broker that raise because of an outage: there is no local answer to give.
    """

    async def publish(
        self,
        app_id: str,
        channel: str,
        message: bytes,
        exclude: str | None,
        *,
        size: int,
        ttl: float,
    ) -> Position | None:
        """Atomically: take the next offset, append ``message``, trim the stream to ``size``
        entries, keep it ``ttl`` seconds after this publication, and deliver it to every
        node (this one included) with its position. Returns that position; None when the
        backend could not be reached (degraded: delivered to this node's subscribers only,
        without a position, and not kept)."""
        ...

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Position:
        """The channel's current position, creating its epoch (at offset 0) if it has
        none. ``ttl``: the channel's history ttl (the meta lives at least
        :data:`META_TTL`)."""
        ...

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> HistoryPage:
        """At most ``limit`` stored publications after ``offset``, ascending, with the
        channel's position (created as by :meth:`position` if it had none)."""
        ...

    async def positions(self, app_id: str, channels: Sequence[str]) -> list[Position | None]:
        """The current position of each of ``channels``, in one round trip at most, read
        only: None for a channel with no epoch (nothing is created, no TTL is touched).
        For a node's periodic check that it missed no channel's last publication."""
        ...
