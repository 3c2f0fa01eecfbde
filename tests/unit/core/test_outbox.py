"""core/outbox.py: the bounded, ordered queue of an HTTP fallback session."""

from __future__ import annotations

from tidings.core.outbox import Outbox


def test_new_outbox_is_empty() -> None:
    outbox = Outbox(100)
    assert len(outbox) == 0
    assert outbox.queued_bytes == 0
    assert outbox.drain() == []
    assert outbox.limit == 100


def test_drain_returns_everything_oldest_first_and_empties() -> None:
    outbox = Outbox(1000)
    for i in range(10):
        assert outbox.push(f"m{i}".encode()) is True
    assert len(outbox) == 10
    assert outbox.queued_bytes == 20
    assert outbox.drain() == [f"m{i}".encode() for i in range(10)]
    assert len(outbox) == 0
    assert outbox.queued_bytes == 0
    assert outbox.drain() == []


def test_a_message_that_fills_the_limit_exactly_is_queued() -> None:
    outbox = Outbox(10)
    assert outbox.push(b"12345") is True
    assert outbox.push(b"67890") is True
    assert outbox.queued_bytes == 10


def test_a_message_past_the_limit_is_refused_and_nothing_changes() -> None:
    outbox = Outbox(10)
    assert outbox.push(b"1234567") is True
    assert outbox.push(b"abcd") is False
    assert len(outbox) == 1
    assert outbox.queued_bytes == 7
    assert outbox.drain() == [b"1234567"]


def test_a_single_message_larger_than_the_limit_is_refused() -> None:
    outbox = Outbox(4)
    assert outbox.push(b"12345") is False
    assert len(outbox) == 0
    assert outbox.queued_bytes == 0


def test_draining_frees_the_budget() -> None:
    outbox = Outbox(8)
    assert outbox.push(b"12345678") is True
    assert outbox.push(b"x") is False
    outbox.drain()
    assert outbox.push(b"x") is True
    assert outbox.drain() == [b"x"]


def test_empty_messages_are_kept_in_order() -> None:
    outbox = Outbox(2)
    assert outbox.push(b"a") is True
    assert outbox.push(b"") is True
    assert outbox.push(b"b") is True
    assert outbox.drain() == [b"a", b"", b"b"]
