"""core/hub.py ``Coalescer``: the publications of one loop tick, written together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tidings.core.hub import Coalescer, Hub, write_to_many
from tidings.core.publication import Publication
from tidings.protocol.frames import text_frame


@dataclass
class Sub:
    socket_id: str
    writes: list[list[bytes]] = field(default_factory=list)  # messages, per publication
    received: list[Publication] = field(default_factory=list)

    def publish(self, publication: Publication) -> None:
        self.writes.append(publication.messages)
        self.received.append(publication)


@dataclass
class Counters:
    deliveries: int = 0
    bytes_out: int = 0


class Ticks:
    """A loop stand-in: callbacks scheduled now run at tick()."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def tick(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def setup() -> tuple[Ticks, Coalescer, Hub, Sub, Sub, Counters]:
    ticks = Ticks()
    outgoing = Coalescer(ticks)
    hub = Hub()
    a, b = Sub("1.1"), Sub("2.2")
    hub.add("news", a)
    hub.add("news", b)
    hub.add("sport", a)
    return ticks, outgoing, hub, a, b, Counters()


def test_one_write_per_socket_per_tick_and_channel() -> None:
    ticks, outgoing, hub, a, b, counters = setup()
    for frame in (b"1", b"2", b"3"):
        outgoing.add(hub, "news", frame, None, counters)
    assert a.writes == [] and bool(outgoing)
    assert len(ticks.callbacks) == 1  # scheduled once
    ticks.tick()
    assert a.writes == [[b"1", b"2", b"3"]] and b.writes == [[b"1", b"2", b"3"]]
    assert a.received[0] is b.received[0]  # one publication for both: encoded once
    assert counters.deliveries == 6  # three messages to two sockets
    # What a WebSocket reads: three 3-byte frames, to each of the two.
    assert counters.bytes_out == 2 * len(text_frame(b"1") * 3) == 18
    assert not outgoing


def test_only_consecutive_publications_to_one_target_are_joined() -> None:
    ticks, outgoing, hub, a, b, counters = setup()
    outgoing.add(hub, "news", b"n1", None, counters)
    outgoing.add(hub, "sport", b"s1", None, counters)
    outgoing.add(hub, "news", b"n2", None, counters)
    outgoing.add(hub, "news", b"n3", "2.2", counters)  # another exclusion: not joined
    ticks.tick()
    assert a.writes == [[b"n1"], [b"s1"], [b"n2"], [b"n3"]]  # publication order kept
    assert b.writes == [[b"n1"], [b"n2"]]
    assert counters.deliveries == 6


def test_flush_writes_now_and_the_tick_finds_nothing() -> None:
    ticks, outgoing, hub, a, _, counters = setup()
    outgoing.add(hub, "news", b"x", None, counters)
    outgoing.flush()
    assert a.writes == [[b"x"]]
    ticks.tick()
    assert a.writes == [[b"x"]]
    outgoing.add(hub, "news", b"y", None, counters)  # a new tick is scheduled
    assert len(ticks.callbacks) == 1
    ticks.tick()
    assert a.writes == [[b"x"], [b"y"]]


def test_a_publication_to_nobody_counts_nothing() -> None:
    ticks, outgoing, hub, _, _, counters = setup()
    outgoing.add(hub, "empty", b"x", None, counters)
    ticks.tick()
    assert counters.deliveries == 0 and counters.bytes_out == 0


def test_a_write_during_the_flush_does_not_flush_again() -> None:
    ticks = Ticks()
    outgoing = Coalescer(ticks)
    hub = Hub()
    seen: list[list[bytes]] = []

    class Direct(Sub):
        def publish(self, publication: Publication) -> None:
            if outgoing:  # what a real connection does before a direct write
                outgoing.flush()
            seen.append(publication.messages)

    hub.add("news", Direct("1.1"))
    counters = Counters()
    outgoing.add(hub, "news", b"a", None, counters)
    outgoing.add(hub, "news", b"b", None, counters)
    ticks.tick()
    assert seen == [[b"a", b"b"]]


def test_a_raising_writer_never_loses_the_other_channels(caplog: pytest.LogCaptureFixture) -> None:
    """Writers never raise for a subscriber; if one breaks that contract for one channel,
    the tick's other publications are still written."""

    def writer(publication: Publication, subscribers: dict[str, Any], exclude: str | None) -> int:
        if b"bad" in publication.messages:
            raise RuntimeError("broken writer")
        return write_to_many(publication, subscribers, exclude)

    ticks, counters = Ticks(), Counters()
    hub = Hub(writer)
    sub = Sub("1.1")
    hub.add("bad", sub)
    hub.add("good", sub)
    coalescer = Coalescer(ticks)
    coalescer.add(hub, "bad", b"bad", None, counters)
    coalescer.add(hub, "good", b"good", None, counters)
    ticks.tick()
    assert sub.writes == [[b"good"]]
    assert counters.deliveries == 1
    assert "delivering to bad failed" in caplog.text


def test_a_run_keeps_each_message_offset_for_positioned_subscribers() -> None:
    ticks = Ticks()
    outgoing = Coalescer(ticks)
    hub = Hub()
    stock, opted = Sub("1.1"), Sub("2.2")
    hub.add("c", stock)
    hub.add("c", opted, positioned=True)
    counters = Counters()
    outgoing.add(hub, "c", b'{"event":"a"}', None, counters, 1)
    outgoing.add(hub, "c", b'{"event":"n"}', None, counters)  # not stored: no offset
    outgoing.add(hub, "c", b'{"event":"b"}', None, counters, 2)
    ticks.tick()
    assert stock.writes == [[b'{"event":"a"}', b'{"event":"n"}', b'{"event":"b"}']]
    assert opted.writes == [
        [
            b'{"event":"a","tidings":{"offset":1}}',
            b'{"event":"n"}',
            b'{"event":"b","tidings":{"offset":2}}',
        ]
    ]
    assert counters.deliveries == 6


def test_a_channel_nobody_subscribes_to_schedules_nothing() -> None:
    """With the hub flushing before each change, a publication to a channel without local
    subscribers can reach nobody: it is not queued, and no tick is scheduled for it."""
    ticks = Ticks()
    outgoing = Coalescer(ticks)
    hub = Hub(before_change=outgoing.flush)
    counters = Counters()
    outgoing.add(hub, "empty", b"m1", None, counters)
    assert not outgoing
    assert ticks.callbacks == []
    late = Sub("3.3")
    hub.add("empty", late)  # joins in the same tick: it never had m1 coming
    outgoing.add(hub, "empty", b"m2", None, counters)
    ticks.tick()
    assert late.writes == [[b"m2"]]
    assert counters.deliveries == 1


def test_a_hub_that_does_not_flush_first_still_queues_for_an_empty_channel() -> None:
    """Without ``before_change`` a subscriber added later in the tick is written what was
    queued before it (the hub cannot say it reaches nobody), as before."""
    ticks = Ticks()
    outgoing = Coalescer(ticks)
    hub = Hub()
    counters = Counters()
    outgoing.add(hub, "empty", b"m1", None, counters)
    late = Sub("3.3")
    hub.add("empty", late)
    ticks.tick()
    assert late.writes == [[b"m1"]]
