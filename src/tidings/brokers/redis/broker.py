"""The Redis broker: many processes and machines behave as one Pusher server.

Each interface of ``base.py`` is a small class beside this one, and all of them reach
Redis through one :class:`~tidings.brokers.redis.link.RedisLink`, which alone knows
whether Redis is reachable (degraded mode). This class builds them and runs their tasks:
the listener (``listener.py``) and the heartbeats (``liveness.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from tidings.brokers.base import Control, Deliver, Reaped, Recovered
from tidings.brokers.bus import BusStats
from tidings.brokers.latency import RoundTrips
from tidings.brokers.redis.cache import RedisCache
from tidings.brokers.redis.claims import RedisClaims
from tidings.brokers.redis.cluster import COMMAND_TIMEOUT, FAILURES
from tidings.brokers.redis.connections import RedisConnectionCounts
from tidings.brokers.redis.control_bus import RedisControlBus
from tidings.brokers.redis.history import RedisHistory
from tidings.brokers.redis.link import UNREACHABLE_REPORT_INTERVAL, RedisLink
from tidings.brokers.redis.listener import Listener
from tidings.brokers.redis.liveness import RECOVERY_SETTLE, Liveness
from tidings.brokers.redis.mirror import Mirror
from tidings.brokers.redis.presence import RedisPresence
from tidings.brokers.redis.pubsub import RedisPubSub
from tidings.brokers.redis.rates import RECONCILE_INTERVAL, RedisRates
from tidings.brokers.redis.scripts import Scripts
from tidings.brokers.redis.subscriptions import RedisSubscriptions


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings",
        node_id: str | None = None,
        sharded: bool = False,
        node_ttl: float = 15.0,
        recovery_settle: float = RECOVERY_SETTLE,
        unreachable_report_interval: float = UNREACHABLE_REPORT_INTERVAL,
        rate_reconcile_interval: float = RECONCILE_INTERVAL,
    ) -> None:
        node_id = node_id or secrets.token_hex(6)
        self.link = RedisLink(url, prefix, node_id, sharded, unreachable_report_interval)
        self.round_trips = RoundTrips()  # state scripts and heartbeats, never publishes
        scripts = Scripts(self.link.cluster, node_id, self.round_trips)
        mirror = Mirror()
        self.pubsub = RedisPubSub(self.link)
        self.control = RedisControlBus(self.link)
        self.liveness = Liveness(
            self.link, scripts, mirror, self.control, node_ttl, recovery_settle
        )
        self.listener = Listener(self.link, mirror, self.pubsub, self.control, self.liveness.resync)
        self.subscriptions = RedisSubscriptions(self.link, scripts, mirror, self.listener)
        self.presence = RedisPresence(self.link, scripts, mirror)
        self.cache = RedisCache(self.link)
        self.history = RedisHistory(self.link, self.pubsub)
        self.claims = RedisClaims(self.link)
        self.rates = RedisRates(self.link, rate_reconcile_interval)
        self.connections = RedisConnectionCounts(self.link)

    @property
    def node_id(self) -> str:
        return self.link.node_id

    @property
    def degraded(self) -> bool:
        return self.link.degraded

    @property
    def bus(self) -> BusStats:
        """Dropped bus messages and listener restarts, for ``/metrics``."""
        return self.listener.bus

    async def start(self, deliver: Deliver, control: Control) -> None:
        self.pubsub.deliver = deliver
        self.control.control = control
        self.listener.start()
        self.liveness.start()
        # Give Redis a moment so a healthy start is not reported degraded; never block on it.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.link.connected.wait(), COMMAND_TIMEOUT)

    async def close(self) -> None:
        await self.rates.close()
        await self.pubsub.close()
        await self.liveness.close()
        await self.listener.close()
        if not self.link.degraded:
            with contextlib.suppress(*FAILURES):
                await self.liveness.leave()
        with contextlib.suppress(*FAILURES):
            await self.link.close()
        self.pubsub.deliver = None
        self.control.control = None

    def on_reaped(self, handler: Reaped) -> None:
        self.liveness.reaped = handler

    def on_recovered(self, handler: Recovered) -> None:
        self.liveness.recovered = handler
