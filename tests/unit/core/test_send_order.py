"""core/send_order.py: a session's sends applied in the client's numbering (pusher-js's
``n``), gaps waited for a bounded time, everything else on arrival."""

from __future__ import annotations

from tidings.core.send_order import SendOrder

WAIT = 0.5


def test_consecutive_numbers_apply_at_once() -> None:
    order = SendOrder(first=10, wait=WAIT)
    assert order.send(11, ("a",), now=0.0) == [("a",)]
    assert order.receive(12, now=0.0) == []
    assert order.send(13, ("b", "c"), now=0.0) == [("b", "c")]
    assert order.deadline is None and order.held == 0


def test_a_send_overtaken_through_another_node_is_applied_first() -> None:
    order = SendOrder(first=10, wait=WAIT)
    assert order.send(12, ("client-event",), now=1.0) == []  # 11 is still on its way
    assert order.deadline == 1.0 + WAIT
    assert order.send(11, ("subscribe",), now=1.1) == [("subscribe",), ("client-event",)]
    assert order.deadline is None


def test_a_receive_request_closes_a_gap() -> None:
    order = SendOrder(first=1, wait=WAIT)
    assert order.send(3, ("x",), now=0.0) == []
    assert order.receive(2, now=0.1) == [("x",)]


def test_a_gap_that_never_closes_is_given_up_after_the_wait() -> None:
    # Another session of the same page took number 2: it never reaches this session.
    order = SendOrder(first=1, wait=WAIT)
    assert order.send(3, ("x",), now=0.0) == []
    assert order.send(4, ("y",), now=0.2) == []
    assert order.expire(now=WAIT - 0.01) == []
    assert order.expire(now=WAIT) == [("x",), ("y",)]
    assert order.deadline is None
    assert order.send(2, ("late",), now=1.0) == [("late",)]  # too late for its place: now


def test_each_gap_is_waited_for_from_when_the_one_before_closed() -> None:
    order = SendOrder(first=1, wait=WAIT)
    assert order.send(3, ("x",), now=0.0) == []
    assert order.send(5, ("z",), now=0.1) == []
    assert order.receive(2, now=0.3) == [("x",)]
    assert order.deadline == 0.3 + WAIT  # now waiting for 4
    assert order.expire(now=0.3 + WAIT) == [("z",)]


def test_too_many_held_requests_give_up_the_oldest_gap() -> None:
    order = SendOrder(first=0, wait=WAIT, max_held=3)
    assert [order.send(n, (str(n),), now=0.0) for n in (2, 3, 4)] == [[], [], []]
    assert order.send(6, ("6",), now=0.0) == [("2",), ("3",), ("4",)]
    assert order.held == 1


def test_unnumbered_and_old_numbers_apply_on_arrival() -> None:
    order = SendOrder(first=5, wait=WAIT)
    assert order.send(7, ("held",), now=0.0) == []
    assert order.send(None, ("no number",), now=0.0) == [("no number",)]
    assert order.send(5, ("same as the opener",), now=0.0) == [("same as the opener",)]
    assert order.held == 1


def test_an_unnumbered_session_or_no_wait_keeps_arrival_order() -> None:
    for order in (SendOrder(first=None, wait=WAIT), SendOrder(first=1, wait=0.0)):
        assert order.send(9, ("a",), now=0.0) == [("a",)]
        assert order.send(3, ("b",), now=0.0) == [("b",)]
        assert order.deadline is None


def test_a_number_sent_twice_keeps_both_batches_in_arrival_order() -> None:
    order = SendOrder(first=1, wait=WAIT)
    assert order.send(3, ("a",), now=0.0) == []
    assert order.send(3, ("b",), now=0.0) == []
    assert order.send(2, ("first",), now=0.0) == [("first",), ("a", "b")]
