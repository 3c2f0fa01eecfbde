"""Per-second counters of REST events (``{prefix}:{app}:rate:{second}``, kept 2 s).

A request never waits for Redis: each node counts its events locally and, every
``RECONCILE_INTERVAL``, adds what it counted since the last time to the cluster's key in one
pipeline (INCRBY + EXPIRE per app), learning the cluster's total in the answer. A request is
judged on that last-known total plus what this node counted since.

The slack this buys (docs/redis.md, "Rate limits"): a node does not see the other nodes'
events of the last interval and a round trip, so the cluster can accept up to what the
*other* nodes accept in that time above the limit. At the start of a second every node
knows nothing of the others yet, so the worst case is a burst on every node at once in the
first interval of a second: N nodes x the limit. This node alone never goes over it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from tidings.brokers.redis.link import RedisLink

RECONCILE_INTERVAL = 0.1  # seconds between two additions of this node's counts to Redis


@dataclass(slots=True)
class _Second:
    """One app's count in one second, as this node knows it."""

    second: int
    local: int = 0  # every event this node counted in the second
    known: int = 0  # the cluster's total at the last reconcile (this node's part included)
    unsent: int = 0  # counted here since, not yet added to Redis
    in_flight: int = 0  # being added to Redis now

    @property
    def estimate(self) -> int:
        # While degraded nothing is sent: the node's own count stands alone.
        return max(self.local, self.known + self.in_flight + self.unsent)


class RedisRates:
    def __init__(self, link: RedisLink, interval: float = RECONCILE_INTERVAL) -> None:
        self._link = link
        self._cluster = link.cluster
        self._interval = interval
        self._apps: dict[str, _Second] = {}
        self._timer: asyncio.Task[None] | None = None
        self._reconciling = asyncio.Lock()

    async def count_backend_events(self, app_id: str, events: int, now: float) -> int:
        second = int(now)
        state = self._apps.get(app_id)
        if state is None or state.second != second:
            # A new second starts from zero; what the last one left unsent is dropped with
            # it (its key expires, and no request is judged on it any more).
            state = self._apps[app_id] = _Second(second)
        state.local += events
        state.unsent += events
        if events and self._timer is None:
            self._timer = asyncio.create_task(self._reconcile_soon())
        return state.estimate

    async def reconcile(self) -> None:
        """Add this node's unsent counts to Redis now and learn the cluster's totals.

        One at a time, so that a total learned never predates one already applied."""
        async with self._reconciling:
            sending = [(app, s, s.unsent) for app, s in self._apps.items() if s.unsent]
            if not sending or self._link.degraded:
                return
            for _, state, count in sending:
                state.unsent -= count
                state.in_flight += count
            counts = [(app, state.second, count) for app, state, count in sending]
            totals = await self._link.call(
                lambda: self._cluster.add_backend_events(counts), lambda: None
            )
            for index, (app, state, count) in enumerate(sending):
                state.in_flight -= count
                if totals is None:
                    state.unsent += count  # Redis failed: sent again after the resync
                elif self._apps.get(app) is state:
                    state.known = totals[index]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    async def _reconcile_soon(self) -> None:
        """Reconcile every interval while this node counts events, then stop."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.reconcile()
                if self._link.degraded or not any(s.unsent for s in self._apps.values()):
                    return  # the next event counted starts it again
        finally:
            self._timer = None
