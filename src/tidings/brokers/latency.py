"""Broker round-trip times: a histogram kept as plain numbers, exported by ``/metrics``.

Only commands that are not per message are timed (state scripts run per subscription,
presence change or sign-in, and the liveness heartbeat), so fan-out pays nothing for it.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds in seconds: a healthy Redis on the same network answers in well under 1 ms;
# the tail shows a loaded or distant one.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class RoundTrips:
    """Counts of round trips per bucket (``le`` = upper bound), their sum and count."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: ``(le, observations <= le)``, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
