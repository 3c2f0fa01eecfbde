"""core/gaps.py: a lost bus message is filled from history before the next goes out."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.core.gaps import Arrival, Gaps, Verdict


@dataclass(frozen=True)
class Pos:
    epoch: str
    offset: int


def a(n: int, exclude: str | None = None) -> Arrival:
    return Arrival(n, b"m%d" % n, exclude)


def test_in_order_duplicates_and_first_seen() -> None:
    g = Gaps(10)
    assert g.arrive("c", "E", a(5)) is Verdict.DELIVER  # the first one sets the start
    assert g.arrive("c", "E", a(6)) is Verdict.DELIVER
    assert g.arrive("c", "E", a(6)) is Verdict.DUPLICATE
    assert g.arrive("c", "E", a(3)) is Verdict.DUPLICATE


def test_a_gap_is_filled_then_the_held_ones_follow_in_order() -> None:
    g = Gaps(10)
    g.arrive("c", "E", a(1))
    assert g.arrive("c", "E", a(4)) is Verdict.FILL
    assert g.filling_after("c") == 1
    assert g.arrive("c", "E", a(5)) is Verdict.HELD
    page = [a(2, "9.9"), a(3), a(4)]
    out = g.filled("c", Pos("E", 4), page, complete=True)
    assert out is not None
    assert [x.offset for x in out] == [2, 3, 4, 5]
    assert out[0].exclude == "9.9"  # the sender still does not get its own event
    assert g.arrive("c", "E", a(5)) is Verdict.DUPLICATE
    assert g.arrive("c", "E", a(6)) is Verdict.DELIVER


def test_an_unfillable_gap_forgets_the_channel() -> None:
    for top, page, complete in [
        (None, [], False),  # the read failed
        (Pos("E", 4), [a(3), a(4)], False),  # trimmed
        (Pos("F", 4), [a(2), a(3), a(4)], True),  # another epoch
        (Pos("E", 4), [a(3), a(4)], True),  # a hole left
    ]:
        g = Gaps(10)
        g.arrive("c", "E", a(1))
        g.arrive("c", "E", a(4))
        assert g.filled("c", top, page, complete) is None
        assert g.filling_after("c") is None
        assert g.arrive("c", "E", a(9)) is Verdict.DELIVER  # starts afresh


def test_too_much_held_during_a_fill_is_an_overflow() -> None:
    g = Gaps(2)
    g.arrive("c", "E", a(1))
    g.arrive("c", "E", a(3))
    assert g.arrive("c", "E", a(4)) is Verdict.HELD
    assert g.arrive("c", "E", a(5)) is Verdict.OVERFLOW
    assert g.filled("c", Pos("E", 5), [a(2)], True) is None


def test_a_new_epoch_restarts_the_count() -> None:
    g = Gaps(10)
    g.arrive("c", "E", a(7))
    assert g.arrive("c", "F", a(1)) is Verdict.NEW_EPOCH
    assert g.arrive("c", "F", a(2)) is Verdict.DELIVER


def test_seed_makes_a_loss_right_after_a_read_visible() -> None:
    g = Gaps(10)
    g.seed("c", Pos("E", 3))
    assert g.arrive("c", "E", a(5)) is Verdict.FILL
    g.seed("c", Pos("E", 9))  # a track exists: seeding changes nothing
    assert g.filling_after("c") == 3


def test_forget() -> None:
    g = Gaps(10)
    g.arrive("c", "E", a(1))
    g.forget("c")
    assert g.arrive("c", "E", a(5)) is Verdict.DELIVER


def test_last_is_per_epoch() -> None:
    g = Gaps(10)
    assert g.last("c", "E") is None
    g.arrive("c", "E", a(4))
    assert g.last("c", "E") == 4 and g.last("c", "F") is None


def test_a_read_past_what_was_delivered_starts_a_fill() -> None:
    g = Gaps(10)
    assert not g.behind("c", Pos("E", 3))  # nothing tracked: nothing to compare with
    g.arrive("c", "E", a(1))
    assert not g.behind("c", Pos("E", 1))  # in step
    assert not g.behind("c", Pos("F", 9))  # another epoch: the next publication tells
    assert g.behind("c", Pos("E", 3))  # 2 and 3 were lost, and nothing came after
    assert g.filling_after("c") == 1
    assert not g.behind("c", Pos("E", 3))  # one fill at a time
    assert g.arrive("c", "E", a(3)) is Verdict.HELD  # the bus was only late after all
    out = g.filled("c", Pos("E", 3), [a(2), a(3)], complete=True)
    assert out is not None and [x.offset for x in out] == [2, 3]  # 3 once
    assert g.arrive("c", "E", a(4)) is Verdict.DELIVER
