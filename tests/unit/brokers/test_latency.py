"""brokers/latency.py: the round-trip histogram behind tidings_broker_round_trip_seconds."""

from __future__ import annotations

from tidings.brokers.latency import BUCKETS, RoundTrips


def test_buckets_are_cumulative_and_end_with_inf() -> None:
    trips = RoundTrips()
    for seconds in (0.0001, 0.0005, 0.003, 0.2, 9.0):
        trips.observe(seconds)
    buckets = dict(trips.cumulative())
    assert list(buckets)[-1] == "+Inf" and len(buckets) == len(BUCKETS) + 1
    assert buckets["0.0005"] == 2  # le is inclusive
    assert buckets["0.005"] == 3
    assert buckets["0.25"] == 4
    assert buckets["2.5"] == 4 and buckets["+Inf"] == 5
    assert trips.count == 5
    assert abs(trips.total - 9.2036) < 1e-9
