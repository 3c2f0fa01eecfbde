"""core/rate.py: the token bucket behind max_connection_rate."""

from __future__ import annotations

import pytest

from tidings.core.rate import TokenBucket


def test_one_second_of_burst_then_refused() -> None:
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_refills_at_the_rate_and_never_past_one_second() -> None:
    bucket = TokenBucket(10, now=0.0)
    for _ in range(10):
        assert bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one token back after 1/rate seconds
    assert not bucket.take(0.1)
    # An hour idle refills only one second's worth.
    assert sum(bucket.take(3600.0) for _ in range(20)) == 10


def test_zero_means_unlimited() -> None:
    bucket = TokenBucket(0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(100_000))


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(2, now=10.0)
    assert bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(5.0)


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        TokenBucket(-1, now=0.0)
