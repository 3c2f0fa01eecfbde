"""Channel history in this process's memory: a ring buffer per channel.

The epoch of a channel is drawn when its meta record is created, so every process start
(and every channel forgotten and seen again) begins a new one. A stream is dropped ``ttl``
seconds after its last publication; its meta (epoch, top offset) is kept for
:data:`~tidings.brokers.history.META_TTL`, and at most :data:`MAX_CHANNELS` metas are kept
at all (the least recently published are forgotten first): channel names come from
clients, so the map they key must be bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from tidings.brokers.base import Deliver
from tidings.brokers.history import META_TTL, HistoryPage, Position, Stored, new_epoch, page

MAX_CHANNELS = 100_000  # channel metas kept; past it the least recently published goes
SWEEP_EVERY = 1_024  # publications between two sweeps of expired streams (at least)


@dataclass(slots=True)
class _Channel:
    epoch: str
    top: int
    stream_expires: float
    meta_expires: float
    entries: deque[Stored] = field(default_factory=deque)


class Local(Protocol):
    """Where this process's publications are delivered (the broker's pub/sub)."""

    @property
    def deliver(self) -> Deliver | None: ...


class MemoryHistory:
    """:class:`~tidings.brokers.history.History` for one process.

    ``publish`` delivers through ``local.deliver`` before it returns, so offsets reach
    local subscribers in order."""

    def __init__(
        self,
        local: Local,
        clock: Callable[[], float] = time.monotonic,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self._local = local
        self._clock = clock
        self._max_channels = max_channels
        self._channels: OrderedDict[tuple[str, str], _Channel] = OrderedDict()
        self._publishes_since_sweep = 0

    def __len__(self) -> int:
        """Channels whose meta is kept."""
        return len(self._channels)

    async def publish(
        self,
        app_id: str,
        channel: str,
        message: bytes,
        exclude: str | None,
        *,
        size: int,
        ttl: float,
    ) -> Position:
        now = self._clock()
        state = self._channel(app_id, channel, now, ttl)
        state.top += 1
        if state.entries.maxlen != size:
            state.entries = deque(state.entries, maxlen=size)
        state.entries.append(Stored(state.top, message, exclude))
        state.stream_expires = now + ttl
        state.meta_expires = now + max(META_TTL, ttl)
        self._channels.move_to_end((app_id, channel))
        self._publishes_since_sweep += 1
        if self._publishes_since_sweep >= max(SWEEP_EVERY, len(self._channels)):
            self._sweep(now)  # amortised: O(1) per publication
        position = Position(state.epoch, state.top)
        deliver = self._local.deliver
        if deliver is not None:  # None: the broker is not started (or stopped)
            deliver(app_id, channel, message, exclude, position)
        return position

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Position:
        state = self._channel(app_id, channel, self._clock(), ttl)
        return Position(state.epoch, state.top)

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> HistoryPage:
        state = self._channel(app_id, channel, self._clock(), 0.0)
        position = Position(state.epoch, state.top)
        if not state.entries:
            return page(position, offset, [])
        # Offsets in the buffer are consecutive: the first one wanted is found by arithmetic.
        skip = max(0, offset + 1 - state.entries[0].offset)
        return page(position, offset, list(islice(state.entries, skip, skip + max(0, limit))))

    async def positions(self, app_id: str, channels: Sequence[str]) -> list[Position | None]:
        now = self._clock()
        out: list[Position | None] = []
        for channel in channels:
            state = self._channels.get((app_id, channel))
            live = state is not None and state.meta_expires > now
            out.append(Position(state.epoch, state.top) if state is not None and live else None)
        return out

    def _channel(self, app_id: str, channel: str, now: float, ttl: float) -> _Channel:
        """The channel's live state: expired parts dropped, created (new epoch) if missing."""
        key = (app_id, channel)
        state = self._channels.get(key)
        if state is not None and state.meta_expires <= now:
            del self._channels[key]
            state = None
        if state is None:
            ttl = max(META_TTL, ttl)
            state = _Channel(new_epoch(), 0, now, now + ttl)
            self._channels[key] = state
            while len(self._channels) > self._max_channels:
                self._channels.popitem(last=False)
        elif state.stream_expires <= now:
            state.entries.clear()
        return state

    def _sweep(self, now: float) -> None:
        """Free expired streams and metas of channels nobody reads or publishes to."""
        self._publishes_since_sweep = 0
        for key, state in list(self._channels.items()):
            if state.meta_expires <= now:
                del self._channels[key]
            elif state.stream_expires <= now:
                state.entries.clear()
