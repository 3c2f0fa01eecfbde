"""What the node's subscription changes mean: webhooks and subscription_count, decided.

Pusher's webhooks announce transitions, not individual sockets:

- ``channel_occupied`` when a channel gets its first subscriber anywhere in the cluster and
  ``channel_vacated`` when it loses its last one;
- ``member_added`` when a user's first socket joins a presence channel and
  ``member_removed`` when their last one leaves;
- ``cache_miss`` once per empty cache channel, not once per subscriber;
- ``subscription_count`` after the count changes, at most every 5 s above 100 subscribers.

Vacancies and removals are *held* a few seconds by the webhook sender and dropped, together
with the occupancy or addition that undoes them, when a client comes straight back (a page
reload): :class:`Occurred` names the held transition it undoes. Times come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, ChannelType

Event = dict[str, Any]
HoldKey = tuple[str, ...]

MAX_TRACKED_CACHE_MISSES = 10_000
SUBSCRIPTION_COUNT_CROWD = 100  # Pusher: above this, subscription_count webhooks every 5 s
SUBSCRIPTION_COUNT_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Occurred:
    """A transition to announce now, unless it cancels the held one it ``undoes``."""

    undoes: HoldKey
    event: Event


@dataclass(frozen=True, slots=True)
class Held:
    """A transition to announce after a delay, under ``key``, unless undone meanwhile."""

    key: HoldKey
    event: Event


def vacancy(channel: str) -> HoldKey:
    return ("vacated", channel)


def removal(channel: str, user_id: str) -> HoldKey:
    return ("removed", channel, user_id)


def subscribed(channel: str, count: int) -> Occurred | None:
    """After a subscribe that left ``count`` subscribers cluster-wide."""
    if count != 1:
        return None
    return Occurred(vacancy(channel), {"name": "channel_occupied", "channel": channel})


def unsubscribed(channel: str, left: int | None) -> Held | None:
    """After an unsubscribe that left ``left`` subscribers (None: the broker failed)."""
    if left != 0:
        return None
    return Held(vacancy(channel), {"name": "channel_vacated", "channel": channel})


def member_joined(channel: str, user_id: str) -> Occurred:
    """A user's first socket joined a presence channel."""
    event = {"name": "member_added", "channel": channel, "user_id": user_id}
    return Occurred(removal(channel, user_id), event)


def member_left(channel: str, user_id: str) -> Held:
    """A user's last socket left a presence channel."""
    event = {"name": "member_removed", "channel": channel, "user_id": user_id}
    return Held(removal(channel, user_id), event)


def reaped(kind: str, channel: str, user_id: str) -> Event | None:
    """The webhook for a transition a dead node's reaping caused (sent at once: nobody
    comes back on a dead node). User channels are internal and announce nothing."""
    if channel.startswith(USER_CHANNEL_PREFIX):
        return None
    if kind == "member_removed":
        return {"name": "member_removed", "channel": channel, "user_id": user_id}
    if kind == "channel_vacated":
        return {"name": "channel_vacated", "channel": channel}
    return None


def counts_subscriptions(enabled: bool, ctype: ChannelType) -> bool:
    """Whether a channel's subscription_count is sent: a feature the app switches on, for
    channels other than presence (whose count is in the roster) and user channels."""
    return enabled and not ctype.is_presence and ctype.kind is not ChannelKind.USER


@dataclass(slots=True)
class CacheMisses:
    """Cache channels whose miss was announced, until when (the app's cache TTL).

    Bounded: at ``limit`` channels, expired entries go first, then the oldest ones (a
    channel forgotten early may have its next miss announced again, which is harmless).
    Entries are kept in insertion order, which is expiry order for one app's fixed TTL.
    """

    limit: int = MAX_TRACKED_CACHE_MISSES
    _until: dict[str, float] = field(default_factory=dict)

    def announce(self, channel: str, now: float, ttl: float) -> bool:
        """Whether a subscriber's miss on ``channel`` at ``now`` is announced."""
        if self._until.get(channel, 0.0) > now:
            return False
        self._until.pop(channel, None)  # re-inserted below, at the end of the expiry order
        self._purge(now)
        while self._until and len(self._until) >= self.limit:
            del self._until[next(iter(self._until))]
        self._until[channel] = now + ttl
        return True

    def forget(self, channel: str) -> None:
        """Something was published to ``channel``: its next miss is news again."""
        self._until.pop(channel, None)

    def _purge(self, now: float) -> None:
        """Drop the expired entries, which come first."""
        while self._until:
            channel, until = next(iter(self._until.items()))
            if until > now:
                return
            del self._until[channel]

    def __len__(self) -> int:
        return len(self._until)


@dataclass(slots=True)
class CountThrottle:
    """When each channel's subscription_count webhook was last sent.

    Pusher: a channel above :data:`SUBSCRIPTION_COUNT_CROWD` subscribers is announced at
    most every :data:`SUBSCRIPTION_COUNT_INTERVAL` seconds; smaller ones on every change.
    """

    _last: dict[str, float] = field(default_factory=dict)

    def due(self, channel: str, count: int, now: float) -> bool:
        """Whether to send ``count`` for ``channel`` now (0 never is: channel_vacated
        says so, and the channel's next count starts afresh)."""
        last = self._last.get(channel)
        if count > SUBSCRIPTION_COUNT_CROWD and last is not None:
            if now - last < SUBSCRIPTION_COUNT_INTERVAL:
                return False
        if not count:
            self._last.pop(channel, None)
            return False
        self._last[channel] = now
        return True


@dataclass(slots=True)
class DirtyCounts:
    """Channels whose subscription_count changed since the last flush, coalesced: a burst of
    joins gives one count per channel.

    A channel is ``local_only`` when every change to it was already known to every node (a
    reaped node): its count then goes to this node's subscribers only. One change that
    other nodes did not see makes the whole count cluster-wide.
    """

    _dirty: dict[tuple[str, str], bool] = field(default_factory=dict)

    def mark(self, app_id: str, channel: str, local_only: bool) -> bool:
        """Note a change; True when it is the first since the last flush (schedule one)."""
        first = not self._dirty
        key = (app_id, channel)
        self._dirty[key] = self._dirty.get(key, True) and local_only
        return first

    def take(self) -> dict[tuple[str, str], bool]:
        """The changes to flush, (app id, channel) -> local only; starts a new burst."""
        dirty, self._dirty = self._dirty, {}
        return dirty
