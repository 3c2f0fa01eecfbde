"""Recovery: exactly the missed events, once and in order, or none of them.

A socket that subscribes with the Tidings opt-in to a channel with history is told its
position; one that also asks to recover from ``(epoch, offset)`` is sent every event it
missed. Live publications do not stop while the history is read, so the node puts a
:class:`Catchup` in the hub in the socket's place *before* it reads: from then on every
publication for that socket and channel is kept, in order, with its offset. When the read
returns, :meth:`Catchup.settle` decides, in one loop tick with nothing published in between:

- **recovered**: the epoch is the one asked for, the page is complete (nothing between the
  asked offset and the top was trimmed or expired) and holds every offset up to the top:
  send the stored events after the asked offset, minus those the old socket sent itself
  (Pusher: a sender never receives its own event), then the held events newer than the
  top (the older ones are in the page: dropped, so none is sent twice);
- **not recovered** (another epoch, a trimmed or expired page, more missed than the
  history keeps): send *none* of the stored events, never a partial replay, then
  ``tidings:unrecovered`` and the held events newer than the top, so the app re-fetches
  and then misses nothing live.

Bounded like the live hold: past ``limit_messages`` or ``limit_bytes`` held, the catch-up
keeps nothing, reports the overflow once, and the node closes the socket with 4200 (it
reconnects and tries again).

Pure: no asyncio, no I/O. The history's types arrive structurally (``Located``,
``StoredEvent``), so the core imports no broker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.core.publication import Publication
from tidings.protocol.recovery import Resume, positioned, unrecovered


class Located(Protocol):
    """A channel's position in its history (``History.position``)."""

    @property
    def epoch(self) -> str: ...

    @property
    def offset(self) -> int: ...


class StoredEvent(Protocol):
    """One stored publication (``History.since``)."""

    @property
    def offset(self) -> int: ...

    @property
    def message(self) -> bytes: ...

    @property
    def exclude(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """What to tell the socket: its position and ``recovered`` (None: not asked) in
    ``subscription_succeeded``, then ``messages`` (positioned) in this order."""

    epoch: str
    offset: int
    recovered: bool | None
    messages: list[bytes]
    replayed: int  # of ``messages``, how many came from the history
    positioned: bool = True  # False: the history could not be read; a stock subscription


def recoverable(
    resume: Resume, top: Located, first: int | None, count: int, complete: bool
) -> bool:
    """Whether a page read after ``resume.offset`` holds every event up to ``top``.

    ``first``: the page's first offset (None: no event); ``count``: how many events it has.
    Offsets are consecutive, so the page is whole iff it starts right after the asked
    offset and has one event per offset up to the top."""
    if not complete or top.epoch != resume.epoch or resume.offset > top.offset:
        return False
    missed = top.offset - resume.offset
    if missed == 0:
        return count == 0
    return first == resume.offset + 1 and count == missed


class Catchup:
    """Publications for one socket on one channel, kept while its position is read.

    ``on_overflow`` is called once, from inside the fan-out that passed a bound: it must
    only schedule work, never write to a socket or change the hub."""

    __slots__ = (
        "socket_id",
        "channel",
        "overflowed",
        "_held",
        "_bytes",
        "_limit_messages",
        "_limit_bytes",
        "_on_overflow",
    )

    def __init__(
        self,
        socket_id: str,
        channel: str,
        limit_messages: int,
        limit_bytes: int,
        on_overflow: Callable[[], object],
    ) -> None:
        self.socket_id = socket_id
        self.channel = channel
        self.overflowed = False
        self._held: list[tuple[bytes, int | None]] = []  # positioned message, offset
        self._bytes = 0
        self._limit_messages = limit_messages
        self._limit_bytes = limit_bytes
        self._on_overflow = on_overflow

    def __len__(self) -> int:
        return len(self._held)

    def publish(self, publication: Publication) -> None:
        """Keep a (positioned) publication's messages with their offsets (the hub's
        ``Subscriber``)."""
        if self.overflowed:
            return
        added = publication.messages
        size = self._bytes + sum([len(m) for m in added])
        if len(self._held) + len(added) > self._limit_messages or size > self._limit_bytes:
            self.overflowed = True
            self._held = []
            self._bytes = 0
            self._on_overflow()
            return
        offsets = publication.offsets or [None] * len(added)
        self._held.extend(zip(added, offsets, strict=True))
        self._bytes = size

    def release(self) -> list[bytes]:
        """Everything held, in order, when no position could be read (the subscription
        goes on as a stock one); the catch-up keeps nothing after this."""
        held, self._held, self._bytes = self._held, [], 0
        return [m for m, _ in held]

    def settle(
        self,
        top: Located,
        resume: Resume | None = None,
        events: Sequence[StoredEvent] = (),
        complete: bool = False,
    ) -> Settled:
        """Decide what the socket is sent, given the channel's position ``top`` and, when
        it asked to recover, the page read after ``resume.offset`` (``events``,
        ``complete``). The catch-up keeps nothing after this."""
        if self.overflowed:
            raise RuntimeError(f"the catch-up of {self.socket_id} on {self.channel} overflowed")
        held, self._held, self._bytes = self._held, [], 0
        # Live events the history read already covers are dropped (sent from the page, or
        # older than the position the client is told); events without an offset (e.g.
        # subscription_count) are not in the history and always go.
        live = [m for m, offset in held if offset is None or offset > top.offset]
        if resume is None:
            return Settled(top.epoch, top.offset, None, live, 0)
        first = events[0].offset if events else None
        if not recoverable(resume, top, first, len(events), complete):
            notice = unrecovered(self.channel, top.epoch, top.offset)
            return Settled(top.epoch, top.offset, False, [notice, *live], 0)
        old = resume.socket_id
        replay = [
            positioned(e.message, e.offset) for e in events if old is None or e.exclude != old
        ]
        return Settled(top.epoch, top.offset, True, [*replay, *live], len(replay))
