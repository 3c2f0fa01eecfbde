"""core/transitions.py: webhook transitions and subscription_count decisions, with a fake clock.

The hold-and-cancel tests run the decisions through core/webhooks.py's ``Delayer``, as the
webhook sender does: a held vacancy is dropped together with the occupancy that undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tidings.core import transitions
from tidings.core.transitions import (
    MAX_TRACKED_CACHE_MISSES,
    SUBSCRIPTION_COUNT_CROWD,
    SUBSCRIPTION_COUNT_INTERVAL,
    CacheMisses,
    CountThrottle,
    DirtyCounts,
    Event,
    Held,
    Occurred,
)
from tidings.core.webhooks import Delayer
from tidings.protocol.channels import channel_type

VACATED_DELAY = 3.0  # server/webhooks.py's default


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    """What Node does with the decisions, over the Delayer the webhook sender uses."""

    clock: FakeClock
    sent: list[Event] = field(default_factory=list)
    delayer: Delayer = field(default_factory=Delayer)

    def hold(self, held: Held | None) -> None:
        if held is not None:
            self.delayer.defer(held.key, held.event, self.clock() + VACATED_DELAY)

    def occur(self, occurred: Occurred | None) -> None:
        if occurred is not None and not self.delayer.cancel(occurred.undoes):
            self.sent.append(occurred.event)

    def due(self) -> list[Event]:
        self.sent += self.delayer.due(self.clock())
        return self.sent


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink(clock: FakeClock) -> Sink:
    return Sink(clock)


def test_occupied_only_for_the_first_subscriber() -> None:
    assert transitions.subscribed("news", 0) is None  # joined again: nothing new
    assert transitions.subscribed("news", 2) is None
    occupied = {"name": "channel_occupied", "channel": "news"}
    assert transitions.subscribed("news", 1) == Occurred(("vacated", "news"), occupied)


def test_vacated_only_when_nobody_is_left() -> None:
    assert transitions.unsubscribed("news", 3) is None
    assert transitions.unsubscribed("news", None) is None  # the broker failed: unknown
    held = transitions.unsubscribed("news", 0)
    assert held == Held(("vacated", "news"), {"name": "channel_vacated", "channel": "news"})


def test_a_vacancy_cancelled_by_a_quick_rejoin(sink: Sink, clock: FakeClock) -> None:
    sink.occur(transitions.subscribed("news", 1))
    sink.hold(transitions.unsubscribed("news", 0))
    clock.now += VACATED_DELAY / 2
    sink.occur(transitions.subscribed("news", 1))  # back within the delay (a reload)
    clock.now += VACATED_DELAY * 2
    assert sink.due() == [{"name": "channel_occupied", "channel": "news"}]


def test_a_vacancy_past_the_delay_is_sent_then_occupied_again(sink: Sink, clock: FakeClock) -> None:
    sink.hold(transitions.unsubscribed("news", 0))
    clock.now += VACATED_DELAY
    assert sink.due() == [{"name": "channel_vacated", "channel": "news"}]
    sink.occur(transitions.subscribed("news", 1))
    assert sink.due()[-1] == {"name": "channel_occupied", "channel": "news"}


def test_member_removed_cancelled_by_the_same_user_only(sink: Sink, clock: FakeClock) -> None:
    sink.hold(transitions.member_left("presence-room", "ann"))
    sink.hold(transitions.member_left("presence-room", "bob"))
    sink.occur(transitions.member_joined("presence-room", "ann"))  # ann reloads
    sink.occur(transitions.member_joined("presence-other", "bob"))  # another channel
    clock.now += VACATED_DELAY
    assert sink.due() == [
        {"name": "member_added", "channel": "presence-other", "user_id": "bob"},
        {"name": "member_removed", "channel": "presence-room", "user_id": "bob"},
    ]


def test_reaped_transitions() -> None:
    assert transitions.reaped("member_removed", "presence-a", "ann") == {
        "name": "member_removed",
        "channel": "presence-a",
        "user_id": "ann",
    }
    assert transitions.reaped("channel_vacated", "news", "") == {
        "name": "channel_vacated",
        "channel": "news",
    }
    assert transitions.reaped("channel_vacated", "#server-to-user-ann", "") is None
    assert transitions.reaped("something_else", "news", "") is None


@pytest.mark.parametrize(
    ("enabled", "channel", "counted"),
    [
        (True, "news", True),
        (True, "private-news", True),
        (True, "private-encrypted-news", True),
        (True, "presence-room", False),  # the roster carries the count
        (True, "#server-to-user-ann", False),
        (False, "news", False),  # a feature the app switches on
    ],
)
def test_which_channels_have_a_subscription_count(
    enabled: bool, channel: str, counted: bool
) -> None:
    assert transitions.counts_subscriptions(enabled, channel_type(channel)) is counted


def test_cache_miss_once_per_window(clock: FakeClock) -> None:
    misses = CacheMisses()
    assert misses.announce("cache-a", clock(), ttl=60.0)
    clock.now += 59.0
    assert not misses.announce("cache-a", clock(), ttl=60.0)  # a second subscriber
    assert misses.announce("cache-b", clock(), ttl=60.0)
    clock.now += 1.0  # cache-a's window is over
    assert misses.announce("cache-a", clock(), ttl=60.0)
    assert not misses.announce("cache-b", clock(), ttl=60.0)


def test_a_publication_makes_the_next_miss_news(clock: FakeClock) -> None:
    misses = CacheMisses()
    assert misses.announce("cache-a", clock(), ttl=60.0)
    misses.forget("cache-a")
    assert misses.announce("cache-a", clock(), ttl=60.0)
    misses.forget("never-missed")  # harmless


def test_expired_misses_are_dropped_as_new_ones_come(clock: FakeClock) -> None:
    misses = CacheMisses()
    for i in range(5):
        misses.announce(f"cache-{i}", clock(), ttl=10.0)
    clock.now += 10.0
    misses.announce("cache-new", clock(), ttl=10.0)
    assert len(misses) == 1


def test_the_tracked_misses_are_capped_oldest_first(clock: FakeClock) -> None:
    misses = CacheMisses(limit=3)
    for name in ("a", "b", "c"):
        assert misses.announce(name, clock(), ttl=60.0)
        clock.now += 1.0
    assert misses.announce("d", clock(), ttl=60.0)  # none expired: "a" goes
    assert len(misses) == 3
    assert misses.announce("a", clock(), ttl=60.0)  # forgotten early: announced again
    assert not misses.announce("c", clock(), ttl=60.0)
    assert not misses.announce("d", clock(), ttl=60.0)
    assert len(misses) == 3


def test_a_renewed_miss_moves_to_the_end_of_the_expiry_order(clock: FakeClock) -> None:
    misses = CacheMisses(limit=2)
    misses.announce("a", clock(), ttl=10.0)
    clock.now += 5.0
    misses.announce("b", clock(), ttl=10.0)
    clock.now += 5.0  # "a" expired, "b" not
    assert misses.announce("a", clock(), ttl=10.0)  # renewed: now after "b"
    clock.now += 5.0  # "b" expired, "a" not
    assert misses.announce("c", clock(), ttl=10.0)
    assert not misses.announce("a", clock(), ttl=10.0)


def test_the_default_cap() -> None:
    assert CacheMisses().limit == MAX_TRACKED_CACHE_MISSES


def test_subscription_count_webhook_on_every_change_below_the_crowd(clock: FakeClock) -> None:
    throttle = CountThrottle()
    for count in (1, 2, SUBSCRIPTION_COUNT_CROWD, 3):
        assert throttle.due("news", count, clock())


def test_subscription_count_throttled_above_the_crowd(clock: FakeClock) -> None:
    crowd = SUBSCRIPTION_COUNT_CROWD + 1
    throttle = CountThrottle()
    assert throttle.due("news", crowd, clock())  # the first count is always sent
    clock.now += SUBSCRIPTION_COUNT_INTERVAL - 0.5
    assert not throttle.due("news", crowd + 1, clock())
    assert throttle.due("other", crowd, clock())  # per channel
    assert throttle.due("news", 5, clock())  # small again: sent on change
    clock.now += 0.1
    assert not throttle.due("news", crowd, clock())  # the window starts at the last send
    clock.now += SUBSCRIPTION_COUNT_INTERVAL
    assert throttle.due("news", crowd, clock())


def test_a_vacated_channel_starts_afresh(clock: FakeClock) -> None:
    throttle = CountThrottle()
    crowd = SUBSCRIPTION_COUNT_CROWD + 1
    assert throttle.due("news", crowd, clock())
    assert not throttle.due("news", 0, clock())  # channel_vacated says it
    assert throttle.due("news", crowd, clock())  # no window left from before


def test_dirty_counts_coalesce_a_burst() -> None:
    dirty = DirtyCounts()
    assert dirty.mark("1", "a", local_only=False) is True  # first: schedule a flush
    assert dirty.mark("1", "a", local_only=False) is False
    assert dirty.mark("1", "b", local_only=True) is False
    assert dirty.mark("2", "a", local_only=True) is False
    assert dirty.take() == {("1", "a"): False, ("1", "b"): True, ("2", "a"): True}
    assert dirty.take() == {}
    assert dirty.mark("1", "a", local_only=True) is True  # a new burst


@pytest.mark.parametrize(
    ("marks", "local_only"),
    [
        ((True, True), True),
        ((True, False), False),
        ((False, True), False),  # one change other nodes did not see: cluster-wide
    ],
)
def test_local_only_when_every_change_was(marks: tuple[bool, ...], local_only: bool) -> None:
    dirty = DirtyCounts()
    for mark in marks:
        dirty.mark("1", "news", local_only=mark)
    assert dirty.take() == {("1", "news"): local_only}
