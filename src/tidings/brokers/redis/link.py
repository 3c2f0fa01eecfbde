"""The node's link to Redis, and the one place that knows whether Redis is reachable.

Every interface of the Redis broker reaches Redis through :meth:`RedisLink.call`: run a
command, or, while Redis is unreachable, answer from what this node knows and mark the
node degraded. No other code catches an outage or checks for one before a command: a
failure anywhere (a command, the listener, the heartbeat) goes to :meth:`RedisLink.failed`,
and only a completed resync (``liveness.py``) ends the outage with :meth:`RedisLink.healthy`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tidings.brokers.redis.cluster import COMMAND_TIMEOUT, FAILURES, ClusterRedis
from tidings.brokers.redis.connect import AnyRedis, close, connect, is_cluster_url
from tidings.brokers.redis.shards import ShardedPubSub
from tidings.redaction import public_url, scrub

log = logging.getLogger("tidings.redis")

T = TypeVar("T")

POOL_SIZE = 32  # commands in flight per node through ``call``; the pool has twice as many
# While Redis stays unreachable, a reminder this often: the first error scrolls away, and
# an operator reading the log later must still see that this node serves only its own clients.
UNREACHABLE_REPORT_INTERVAL = 30.0


class RedisLink:
    """The connection pool, the outage state and its reports.

    ``degraded`` is True from construction until the first resync completes, and from
    any failure until the next one. While degraded, ``call`` runs nothing and answers
    from the fallback: the listener alone reconnects (with backoff), so an outage costs
    no timeouts on the hot path.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        node_id: str,
        sharded: bool,
        report_interval: float = UNREACHABLE_REPORT_INTERVAL,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.redis: AnyRedis
        # Commands wait here, in arrival order, for one of POOL_SIZE slots (a burst is load,
        # not an outage), with room left in the pool for what does not go through ``call``
        # (heartbeat, reaper, resync, claims). A cluster client's pools refuse a command
        # over their size instead of waiting; redis-py's BlockingConnectionPool waits, but
        # unfairly: a command arriving as a connection is freed takes it before those
        # already waiting, so under a long burst some wait out its timeout while Redis
        # idles. 100,000 subscriptions through 6 workers (bench/hold.py) hit that timeout
        # and took workers for an outage; tests/unit/brokers/test_redis_link.py shows it.
        self._commands = asyncio.Semaphore(POOL_SIZE)
        if is_cluster_url(url):
            # redis-py follows MOVED and refreshes its slot map itself; a master that does
            # not answer is an outage like a lost Redis (pub/sub is always sharded there).
            self.redis = connect(
                url,
                max_connections=2 * POOL_SIZE,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
            )
            sharded = True
        else:
            # A burst of commands (a reconnect storm subscribing thousands of sockets) waits
            # for a pooled connection instead of failing: a full pool is load, not an outage.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=2 * POOL_SIZE,
                timeout=COMMAND_TIMEOUT * 5,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            self.redis = aioredis.Redis(connection_pool=pool)
        self.cluster = ClusterRedis(self.redis, prefix, sharded)
        self.degraded = True  # until the first successful connection
        # A command failed: the listener must reconnect and resync even if its own
        # connection still looks healthy.
        self.resync_needed = False
        self.connected = asyncio.Event()
        self._report_interval = report_interval
        self._unreachable_since: float | None = None  # monotonic; None while connected
        self._last_report = 0.0
        self._synced_once = False

    async def call(self, command: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """``await command()``, or ``fallback()`` (this node's local answer) while Redis is
        unreachable or when the command fails (which starts an outage)."""
        if self.degraded:
            return fallback()
        try:
            async with self._commands:
                return await command()
        except FAILURES as exc:
            self.failed(exc)
            return fallback()

    def failed(self, exc: BaseException) -> None:
        """Redis did not answer: serve local clients only until the next resync."""
        self._report_unreachable(exc)
        self.degraded = True
        self.connected.clear()
        self.resync_needed = True

    def healthy(self) -> bool:
        """The node's state is back in Redis: leave degraded mode.

        Returns True when this ends an outage that followed a healthy period: member
        events published meanwhile were lost, and the node must re-read what it showed."""
        was_degraded = self.degraded
        self.degraded = False
        self.resync_needed = False
        self.connected.set()
        recovered = False
        if was_degraded:
            since, self._unreachable_since = self._unreachable_since, None
            where = public_url(self.url)
            if since is None:
                log.info("redis connected at %s (node %s)", where, self.node_id)
            else:
                log.info(
                    "redis connected at %s after %.0f s unreachable (node %s)",
                    where,
                    time.monotonic() - since,
                    self.node_id,
                )
            recovered = self._synced_once
        self._synced_once = True
        return recovered

    def pubsub(self) -> PubSub | ShardedPubSub:
        """A new pub/sub connection (one per shard on a Redis Cluster)."""
        if isinstance(self.redis, RedisCluster):
            return ShardedPubSub(self.redis)
        return self.redis.pubsub(ignore_subscribe_messages=True)

    async def close(self) -> None:
        await close(self.redis)

    def _report_unreachable(self, exc: BaseException) -> None:
        """Log an outage once when it starts (an error if Redis was never reached: likely a
        wrong URL), then a warning every ``report_interval`` seconds while it lasts. The
        URL is shown without its password; ``scrub`` keeps it out of the reason too,
        should a message ever quote the URL."""
        now = time.monotonic()
        where = public_url(self.url)
        reason = scrub(str(exc), self.url)
        since = self._unreachable_since
        if since is None:
            self._unreachable_since = self._last_report = now
            if not self._synced_once:
                log.error(
                    "cannot reach Redis at %s (%s): serving local clients only, retrying",
                    where,
                    reason,
                )
            elif not self.degraded:
                log.warning(
                    "redis unreachable at %s (%s): serving local clients only", where, reason
                )
        elif now - self._last_report >= self._report_interval:
            self._last_report = now
            log.warning(
                "redis at %s still unreachable after %.0f s (%s): serving local clients only",
                where,
                now - since,
                reason,
            )
