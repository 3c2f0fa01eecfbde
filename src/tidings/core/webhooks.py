"""Webhooks with no I/O: who wants which event, batching, delays, backoff and signing.

Pusher sends ``{"time_ms", "events": [...]}`` signed with the app secret
(``X-Pusher-Signature``: hex HMAC-SHA256 of the raw body). ``channel_vacated`` and
``member_removed`` are delayed a few seconds and dropped, together with the event that
undoes them, when a client comes straight back, so a quick reconnect makes no flapping pair.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

Event = dict[str, Any]

EVENT_TYPES = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One configured webhook URL of an app, with its filters."""

    url: str
    event_types: frozenset[str] = frozenset()  # empty: every type
    starts_with: str = ""
    ends_with: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def wants(self, event: Event) -> bool:
        if self.event_types and event["name"] not in self.event_types:
            return False
        channel = str(event.get("channel", ""))
        return channel.startswith(self.starts_with) and channel.endswith(self.ends_with)


# -- what the sender writes to the durable queue, in one atomic step per flush -------------
#
# An event is written as soon as it happens (an "entry"), not after the batch window: the
# window is applied when the queue is read (``window``), so a kill -9 loses only what was not
# yet handed to the queue. Held events (``channel_vacated``, ``member_removed``) are written
# too, so any node (or the restarted one) can release them when their owner died.


@dataclass(frozen=True, slots=True)
class Push:
    """Append ``entry`` to the queue of each of ``keys``."""

    keys: tuple[str, ...]
    entry: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep ``event`` of app ``app_id`` under ``hold_id`` until ``due_ms`` (wall clock)."""

    hold_id: str
    due_ms: int
    app_id: str
    event: bytes


@dataclass(frozen=True, slots=True)
class Unhold:
    """Forget the held event ``hold_id`` (undone on this node, already known here)."""

    hold_id: str


@dataclass(frozen=True, slots=True)
class Occur:
    """A transition that undoes the held ``hold_id``: if it is still held, forget both;
    otherwise append ``entry`` to ``keys`` (the undoing may come through another node)."""

    hold_id: str
    keys: tuple[str, ...]
    entry: bytes


@dataclass(frozen=True, slots=True)
class Release:
    """A held event fell due: append ``entry`` to ``keys`` if ``hold_id`` is still held (and
    forget it), else nothing (undone, or released already by another node)."""

    hold_id: str
    keys: tuple[str, ...]
    entry: bytes


QueueOp = Push | Hold | Unhold | Occur | Release


def entry(events: list[Event], created_ms: int) -> bytes:
    """A queue entry: the events and when they happened (ms since the epoch)."""
    return orjson.dumps({"created": created_ms, "events": events})


def hold_id(app_id: str, key: Hashable) -> str:
    """The queue's name for a held event: one per app and hold key, cluster-wide."""
    parts = key if isinstance(key, tuple) else (key,)
    return orjson.dumps([app_id, *parts]).decode()


def window(created_ms: Iterable[int], delay_ms: int) -> int:
    """How many entries from the head (``created_ms`` in queue order) go in one request:
    those created within ``delay_ms`` of the first (at least the first). Reads
    ``created_ms`` only up to the first entry outside the window."""
    count = 0
    end = 0
    for created in created_ms:
        if count == 0:
            end = created + delay_ms
        elif created > end:
            break
        count += 1
    return count


@dataclass(slots=True)
class Delayer:
    """Events held until a time, cancellable by key (channel_vacated, member_removed)."""

    _events: dict[Hashable, tuple[float, Any]] = field(default_factory=dict)
    _heap: list[tuple[float, int, Hashable]] = field(default_factory=list)
    _counter: int = 0

    def defer(self, key: Hashable, event: Any, at: float) -> None:
        self._events[key] = (at, event)
        self._counter += 1
        heapq.heappush(self._heap, (at, self._counter, key))

    def cancel(self, key: Hashable) -> bool:
        """Drop a held event; True when there was one (the transition is undone)."""
        return self._events.pop(key, None) is not None

    def due(self, now: float) -> list[Any]:
        ready: list[Any] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            held = self._events.get(key)
            if held is not None and held[0] == at:
                del self._events[key]
                ready.append(held[1])
        return ready

    def next_due(self) -> float | None:
        while self._heap:
            at, _, key = self._heap[0]
            held = self._events.get(key)
            if held is not None and held[0] == at:
                break
            heapq.heappop(self._heap)  # cancelled, or replaced by a later defer
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._events)


def backoff(attempt: int, jitter: float) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, capped, with jitter.

    ``jitter`` in [0, 1) spreads retries of many batches over the second half of the wait.
    """
    exponent = min(max(0, attempt - 1), 16)  # 2**16 s is far past the cap already
    wait: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**exponent)
    return wait * (0.5 + jitter / 2)


def body(events: list[Event], time_ms: int) -> bytes:
    return orjson.dumps({"time_ms": time_ms, "events": events})


def signature(secret: str, raw_body: bytes) -> str:
    return hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
