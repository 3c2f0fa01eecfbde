"""A token bucket: at most ``rate`` events per second, with one second of burst.

Used for ``max_connection_rate`` (new connections per second per node). Sans-I/O: the
caller passes the current time.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, holding at most ``rate`` (one second's worth of burst).

    A rate of 0 means no limit: :meth:`take` always succeeds.
    """

    __slots__ = ("rate", "_tokens", "_updated")

    def __init__(self, rate: float, now: float) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.rate = rate
        self._tokens = rate  # a node that just started may take a full burst
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False when over the rate."""
        if not self.rate:
            return True
        elapsed = max(0.0, now - self._updated)  # a clock going backwards refills nothing
        self._updated = now
        self._tokens = min(self.rate, self._tokens + elapsed * self.rate)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
