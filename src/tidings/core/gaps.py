"""Gap-filling: every publication of a channel with history reaches this node's sockets,
in offset order, or the sockets are told to reconnect.

Redis pub/sub is at most once: a message published while a node's connection to Redis
was down never reaches it. Publications of a channel with history carry their position,
so the node sees the hole: it remembers, per channel, the last offset it delivered, and
when the next one jumps past it the node holds that channel's deliveries, reads what is
missing from the history, and delivers the missed events and then the held ones. If the
history no longer has them (trimmed, expired, another epoch) or too much piles up while
it reads, the channel's sockets, opted in or not, are closed with 4200: they reconnect at
once and an opted-in client recovers or is told to re-fetch.

A lost *last* publication shows no jump: the node's periodic position check reads the
channel's top and, when it is past what was delivered, starts the same fill
(:meth:`Gaps.behind`).

:class:`Gaps` is that bookkeeping for one app, pure: no asyncio, no I/O. The node calls
:meth:`Gaps.arrive` for each positioned delivery and acts on the :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from tidings.core.recovery import Located, StoredEvent


@dataclass(frozen=True, slots=True)
class Arrival:
    """One positioned delivery from the bus."""

    offset: int
    message: bytes
    exclude: str | None


class Verdict(Enum):
    DELIVER = "deliver"  # the next offset (or the first seen): deliver it now
    DUPLICATE = "duplicate"  # already delivered (a fill got there first): drop it
    HELD = "held"  # a fill is running: kept, delivered when it ends
    FILL = "fill"  # a gap: kept; read the history after :meth:`Gaps.filling_after`
    NEW_EPOCH = "new epoch"  # the stream was lost: opted-in sockets' offsets mean nothing now
    OVERFLOW = "overflow"  # too much held during a fill: close the channel's sockets


@dataclass(slots=True)
class _Track:
    epoch: str
    last: int  # the last offset delivered
    held: list[Arrival] | None = field(default=None)  # while a fill runs


class Gaps:
    """The last offset delivered per channel, and the fills in progress.

    ``limit_held`` bounds what one channel keeps while its fill runs. Channels are
    forgotten when their last local subscriber leaves (:meth:`forget`), so the map is
    bounded by the channels this node serves."""

    __slots__ = ("_tracks", "_limit_held")

    def __init__(self, limit_held: int) -> None:
        self._tracks: dict[str, _Track] = {}
        self._limit_held = limit_held

    def arrive(self, channel: str, epoch: str, arrival: Arrival) -> Verdict:
        track = self._tracks.get(channel)
        if track is None:
            self._tracks[channel] = _Track(epoch, arrival.offset)
            return Verdict.DELIVER
        if track.held is not None:
            if len(track.held) >= self._limit_held:
                del self._tracks[channel]
                return Verdict.OVERFLOW
            track.held.append(arrival)
            return Verdict.HELD
        if epoch != track.epoch:
            self._tracks[channel] = _Track(epoch, arrival.offset)
            return Verdict.NEW_EPOCH
        if arrival.offset <= track.last:
            return Verdict.DUPLICATE
        if arrival.offset == track.last + 1:
            track.last = arrival.offset
            return Verdict.DELIVER
        track.held = [arrival]
        return Verdict.FILL

    def seed(self, channel: str, top: Located) -> None:
        """A history read saw the channel at ``top``: if nothing was delivered here yet,
        the next publication must follow it (so one lost right after is noticed)."""
        if channel not in self._tracks:
            self._tracks[channel] = _Track(top.epoch, top.offset)

    def behind(self, channel: str, top: Located) -> bool:
        """A read found ``channel`` at ``top``. True when that is past what was delivered
        here (same epoch, no fill running): a publication was lost and none followed to
        show the hole. A fill is then started, with nothing held yet; the caller reads the
        history after :meth:`filling_after` and ends it with :meth:`filled`."""
        track = self._tracks.get(channel)
        if track is None or track.held is not None or track.epoch != top.epoch:
            return False
        if top.offset <= track.last:
            return False
        track.held = []
        return True

    def last(self, channel: str, epoch: str) -> int | None:
        """The last offset of ``epoch`` delivered here on ``channel`` (None: none tracked,
        or another epoch)."""
        track = self._tracks.get(channel)
        return track.last if track is not None and track.epoch == epoch else None

    def filling_after(self, channel: str) -> int | None:
        """The offset to read the history after, while a fill of ``channel`` runs."""
        track = self._tracks.get(channel)
        return track.last if track is not None and track.held is not None else None

    def filled(
        self, channel: str, top: Located | None, events: Sequence[StoredEvent], complete: bool
    ) -> list[Arrival] | None:
        """End a fill with the page read (``top`` None: the read failed): what to deliver,
        in order, or None when the hole cannot be filled (the channel is forgotten; the
        caller closes its sockets)."""
        track = self._tracks.get(channel)
        if track is None or track.held is None:
            return None  # forgotten meanwhile (overflow, or nobody left)
        held, track.held = track.held, None
        if top is None or not complete or top.epoch != track.epoch:
            del self._tracks[channel]
            return None
        merged = {e.offset: Arrival(e.offset, e.message, e.exclude) for e in events}
        for arrival in held:
            merged.setdefault(arrival.offset, arrival)
        out = [merged[o] for o in sorted(merged) if o > track.last]
        if [a.offset for a in out] != list(range(track.last + 1, track.last + 1 + len(out))):
            del self._tracks[channel]
            return None
        if out:
            track.last = out[-1].offset
        return out

    def forget(self, channel: str) -> None:
        self._tracks.pop(channel, None)
