"""Start and stop in one order, whatever serves the sockets (``tidings serve``, ``rt.asgi()``).

Start: the node and its broker, the webhook sender, then each edge as it is added.
Drain: ``/ready`` turns 503 for ``shutdown_ready_delay`` seconds so load balancers stop
routing here; edges stop accepting; every connection is closed with 4200 (reconnect,
elsewhere); each edge then closes its own sockets and sessions, giving polling clients up
to ``CLOSE_HANDOVER`` seconds to collect their close. Stop: each edge releases what it
holds (in-flight requests finish), pending webhooks go to their durable queue, the broker
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from tidings.brokers.base import Broker
from tidings.brokers.bus import BusStats
from tidings.brokers.latency import RoundTrips
from tidings.brokers.memory import MemoryBroker
from tidings.config import Settings
from tidings.core.admission import Admission
from tidings.core.apps import AppRegistry
from tidings.live.snapshots import HttpSnapshots
from tidings.node import Node, NodeSettings
from tidings.protocol.errors import ErrorCode
from tidings.server import fanout
from tidings.server.health import Health
from tidings.server.metrics import Metrics
from tidings.server.webhook_queue import RedisQueue, SqliteQueue, WebhookQueue
from tidings.server.webhooks import QueueLock, WebhookSender, WebhookSettings

log = logging.getLogger("tidings.server")

# How long a drain waits for polling clients, between two polls, to collect their 4200: a
# client re-polls within a round trip of its last answer, so 2 s covers a slow network.
CLOSE_HANDOVER = 2.0


class Edge(Protocol):
    """Something that serves the node's clients: the aiohttp server, an ASGI app.

    The lifecycle calls each method once, in this order, on the node's loop."""

    async def start(self) -> None:
        """Ready to serve (background tasks running); called when the edge is added."""
        ...

    async def stop_accepting(self) -> None:
        """No new connections from now on: reconnecting clients go to another node."""
        ...

    async def drain(self, grace: float) -> None:
        """After the node told every connection to reconnect (4200): wait for this edge's
        sockets to close, giving polling clients up to ``grace`` seconds to collect it."""
        ...

    async def close(self) -> None:
        """Release everything: requests still in flight finish first. Also called, alone,
        when a start failed half-way."""
        ...


class Lifecycle:
    """One node with its broker, webhooks, health and metrics, and the edges serving it.

    Used once: ``start``, ``add`` edges, ``drain``, ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node: Node = make_node(settings)
        self.webhooks: WebhookSender | None = None
        self.snapshots: HttpSnapshots | None = None
        self.health = Health(self.node.broker, "redis" if settings.redis else "memory")
        self.edges: list[Edge] = []
        self.running = False
        self._draining: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set: the ready delay is over

    async def start(self) -> None:
        """Start the webhook sender, then the node."""
        self.webhooks = make_webhooks(self.settings, self.node)
        if self.webhooks is not None:
            self.node.webhooks = self.webhooks
            await self.webhooks.start()
        if any(app.live_snapshot_url for app in self.node.apps):
            # Apps with a live_snapshot_url get their snapshots from it; an embedding live
            # layer may replace this provider (it answers for its own app).
            self.snapshots = HttpSnapshots(self.node.apps)
            self.node.live_snapshots = self.snapshots
            self.node.live_apps = self.snapshots.app_ids
        await self.node.start()
        self.running = True

    def metrics(self, admission: Admission[Any] | None = None) -> Metrics:
        """``/metrics`` for an edge, after :meth:`start`; ``admission`` is its listener's
        table of pending connections, when it has one."""
        return Metrics(
            self.node,
            self.webhooks,
            broker_round_trips(self.node.broker),
            admission,
            broker_bus_stats(self.node.broker),
        )

    async def add(self, edge: Edge) -> None:
        """Start ``edge`` and include it in the drain and stop."""
        self.edges.append(edge)
        await edge.start()

    async def drain(self) -> None:
        """Tell load balancers, then every client, to go elsewhere; wait for the sockets.

        Once: a later call cuts short what is left of the ready delay and waits for the
        first (``rt.asgi()`` drains on SIGTERM, before its server's shutdown, and again in
        the lifespan shutdown that follows, when that server is done anyway)."""
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        else:
            self.hurry()
        await asyncio.shield(self._draining)

    def hurry(self) -> None:
        """Skip what is left of ``shutdown_ready_delay``: the process stops now anyway."""
        self._hurry.set()

    async def _drain(self) -> None:
        # Load balancers poll /ready: give them time to take this node out before its
        # clients are told to reconnect, or the reconnects would land here again.
        self.health.draining = True
        delay = self.settings.shutdown_ready_delay
        if delay:
            log.info("/ready answers 503; closing connections in %g s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), delay)
        for edge in self.edges:
            await edge.stop_accepting()
        await self.node.drain(ErrorCode.RECONNECT)
        grace = min(CLOSE_HANDOVER, self.settings.shutdown_timeout)
        for edge in self.edges:
            await edge.drain(grace)

    async def stop(self) -> None:
        """Close the edges, write pending webhooks to their queue, close the broker."""
        self.running = False
        for edge in self.edges:
            await edge.close()
        if self.webhooks is not None:
            await self.webhooks.close()  # pending events go to the durable queue first
        await self.node.close()
        if self.snapshots is not None:
            await self.snapshots.close()


def make_node(settings: Settings) -> Node:
    apps = AppRegistry.of(app.to_app() for app in settings.apps)
    node_settings = NodeSettings(
        activity_timeout=settings.activity_timeout,
        pong_timeout=settings.pong_timeout,
        max_connections=settings.max_connections,
        max_connection_rate=settings.max_connection_rate,
        history_check_interval=settings.history_check_interval,
    )
    return Node(apps, make_broker(settings), node_settings, write=fanout.write_many)


def make_broker(settings: Settings) -> Broker:
    if settings.redis is None:
        return MemoryBroker()
    from tidings.brokers.redis import RedisBroker

    return RedisBroker(
        settings.redis,
        prefix=settings.redis_prefix,
        sharded=settings.redis_sharded,
        node_ttl=settings.node_ttl,
    )


def broker_round_trips(broker: Broker) -> RoundTrips | None:
    """The Redis broker's round-trip histogram (the memory broker has no round trips)."""
    from tidings.brokers.redis import RedisBroker

    return broker.round_trips if isinstance(broker, RedisBroker) else None


def broker_bus_stats(broker: Broker) -> BusStats | None:
    """The Redis broker's dropped-message and listener counters (none for memory)."""
    from tidings.brokers.redis import RedisBroker

    return broker.bus if isinstance(broker, RedisBroker) else None


def make_webhooks(settings: Settings, node: Node) -> WebhookSender | None:
    """The webhook sender, when any app has webhooks; its queue is durable either way."""
    if not any(app.webhooks for app in node.apps):
        return None
    queue: WebhookQueue
    client = None
    if settings.redis:
        from tidings.brokers.redis.connect import connect

        client = connect(settings.redis, max_connections=8)
        queue = RedisQueue(client, settings.redis_prefix)
    else:
        queue = SqliteQueue(settings.webhook_queue)
    return WebhookSender(
        node.apps,
        queue,
        WebhookSettings(
            timeout=settings.webhook_timeout,
            retry_for=settings.webhook_retry_for,
            batch_delay=settings.webhook_batch_delay,
            vacated_delay=settings.webhook_vacated_delay,
        ),
        QueueLock(client, settings.redis_prefix, node.broker.node_id),
        node.tap,
    )
