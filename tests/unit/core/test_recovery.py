"""core/recovery.py: the catch-up merge, all or nothing, no duplicates, no gaps."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from tidings.core.publication import Publication
from tidings.core.recovery import Catchup, recoverable
from tidings.protocol import messages
from tidings.protocol.recovery import Resume


@dataclass(frozen=True)
class Pos:
    epoch: str
    offset: int


@dataclass(frozen=True)
class Ev:
    offset: int
    message: bytes
    exclude: str | None = None


def msg(n: int) -> bytes:
    return messages.event("e", "c", str(n))


def stored(*offsets: int, exclude: dict[int, str] | None = None) -> list[Ev]:
    return [Ev(n, msg(n), (exclude or {}).get(n)) for n in offsets]


def live(*offsets: int) -> Publication:
    """What the hub hands a positioned subscriber: the positioned copy."""
    return Publication([msg(n) for n in offsets], list(offsets)).positioned


def offsets_of(sent: list[bytes]) -> list[int | str]:
    out: list[int | str] = []
    for m in sent:
        decoded = orjson.loads(m)
        out.append(decoded["tidings"]["offset"] if "tidings" in decoded else decoded["event"])
    return out


def catchup(limit: int = 100) -> Catchup:
    return Catchup("2.2", "c", limit, 1 << 20, lambda: None)


def test_first_subscribe_gets_the_top_and_live_events_after_it() -> None:
    c = catchup()
    c.publish(live(4, 5))
    c.publish(live(6))
    settled = c.settle(Pos("E", 5))
    assert (settled.epoch, settled.offset, settled.recovered) == ("E", 5, None)
    assert offsets_of(settled.messages) == [6]


def test_recovered_replays_the_missed_then_held_newer_without_duplicates() -> None:
    c = catchup()
    c.publish(live(9, 10))  # 9 and 10 are in the page too
    c.publish(live(11))
    settled = c.settle(Pos("E", 10), Resume("E", 7, "1.1"), stored(8, 9, 10), complete=True)
    assert settled.recovered is True and settled.offset == 10
    assert offsets_of(settled.messages) == [8, 9, 10, 11]
    assert settled.replayed == 3


def test_events_the_old_socket_sent_are_not_replayed() -> None:
    c = catchup()
    page = stored(8, 9, 10, exclude={9: "1.1", 10: "3.3"})
    settled = c.settle(Pos("E", 10), Resume("E", 7, "1.1"), page, complete=True)
    assert offsets_of(settled.messages) == [8, 10]


def test_no_socket_id_excludes_nothing() -> None:
    settled = catchup().settle(Pos("E", 2), Resume("E", 0, None), stored(1, 2), complete=True)
    assert offsets_of(settled.messages) == [1, 2]


def test_nothing_missed_is_recovered_with_no_replay() -> None:
    settled = catchup().settle(Pos("E", 7), Resume("E", 7, None), [], complete=True)
    assert settled.recovered is True and settled.messages == []


@pytest.mark.parametrize(
    ("top", "resume", "page", "complete"),
    [
        (Pos("F", 10), Resume("E", 7, None), stored(8, 9, 10), True),  # another epoch
        (Pos("E", 10), Resume("E", 7, None), stored(9, 10), False),  # trimmed
        (Pos("E", 10), Resume("E", 7, None), stored(8, 9), True),  # page short of the top
        (Pos("E", 10), Resume("E", 7, None), stored(8, 10), True),  # a hole in the page
        (Pos("E", 3), Resume("E", 7, None), [], True),  # the client is ahead of the stream
    ],
)
def test_unrecoverable_sends_no_replay_then_the_unrecovered_event_then_live(
    top: Pos, resume: Resume, page: list[Ev], complete: bool
) -> None:
    c = catchup()
    c.publish(live(top.offset, top.offset + 1))
    settled = c.settle(top, resume, page, complete)
    assert settled.recovered is False and settled.replayed == 0
    assert offsets_of(settled.messages) == ["tidings:unrecovered", top.offset + 1]
    assert orjson.loads(orjson.loads(settled.messages[0])["data"]) == {
        "epoch": top.epoch,
        "offset": top.offset,
    }


def test_held_events_without_offset_always_go_in_order() -> None:
    c = catchup()
    count = messages.event("pusher_internal:subscription_count", "c", "{}")
    c.publish(Publication([msg(3), count, msg(4)], [3, None, 4]).positioned)
    settled = c.settle(Pos("E", 3))
    assert offsets_of(settled.messages) == ["pusher_internal:subscription_count", 4]


def test_overflow_keeps_nothing_and_reports_once() -> None:
    calls: list[int] = []
    c = Catchup("2.2", "c", 2, 1 << 20, lambda: calls.append(1))
    c.publish(live(1, 2))
    c.publish(live(3))
    c.publish(live(4))
    assert c.overflowed and len(c) == 0 and calls == [1]
    with pytest.raises(RuntimeError):
        c.settle(Pos("E", 4))


def test_recoverable_needs_every_offset_up_to_the_top() -> None:
    r = Resume("E", 5, None)
    assert recoverable(r, Pos("E", 8), 6, 3, True)
    assert not recoverable(r, Pos("E", 8), 7, 2, True)
    assert not recoverable(r, Pos("E", 8), 6, 3, False)
    assert recoverable(r, Pos("E", 5), None, 0, True)
