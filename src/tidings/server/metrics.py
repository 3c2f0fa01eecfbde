"""``GET /metrics``: Prometheus text format, labelled by app.

Gauges and counters are read from the node at scrape time (the hot path only bumps plain
integers). Secrets never appear: apps are labelled by id, webhook URLs without their user
info or query string.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidings.brokers.bus import BusStats
from tidings.brokers.latency import RoundTrips
from tidings.core.admission import Admission, Cut
from tidings.live_subscriptions import SnapshotResult
from tidings.node import AppCounters, Node
from tidings.protocol.errors import ErrorCode
from tidings.redaction import public_url
from tidings.server.webhooks import WebhookSender

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left mid-request

NO_APP = ""  # the app label of refusals of connections that named no known app


# Per-app totals of AppCounters exported as counters: (metric, help, AppCounters field).
APP_COUNTERS = (
    ("tidings_connections_opened", "Connections accepted", "connections_opened"),
    ("tidings_messages_received", "Messages received from clients", "messages_in"),
    ("tidings_publications", "Events published to channels", "publications"),
    ("tidings_deliveries", "Messages written to subscribers", "deliveries"),
    ("tidings_slow_consumer_closes", "Connections closed as slow consumers", "slow_consumers"),
    ("tidings_received_bytes", "Bytes of the messages received from clients", "bytes_in"),
    ("tidings_sent_bytes", "Bytes written to clients", "bytes_out"),
    ("tidings_history_gaps_filled", "Lost bus messages filled from channel history", "gaps_filled"),
    (
        "tidings_history_gaps_unfilled",
        "Lost bus messages history could not fill (the channel's sockets closed with 4200)",
        "gaps_unfilled",
    ),
    ("tidings_recoveries", "Subscriptions that recovered every missed event", "recovered"),
    (
        "tidings_recoveries_refused",
        "Subscriptions that asked to recover and were told to re-fetch",
        "unrecovered",
    ),
)


class NodeCollector(Collector):
    def __init__(
        self,
        node: Node,
        webhooks: WebhookSender | None,
        round_trips: RoundTrips | None,
        admission: Admission[Any] | None,
        bus: BusStats | None = None,
    ) -> None:
        self.node = node
        self.webhooks = webhooks
        self.round_trips = round_trips
        self.admission = admission
        self.bus = bus
        # Refreshed by the /metrics handler before each scrape (reading it needs I/O).
        self.queue_depths: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["app"]
        connections = GaugeMetricFamily(
            "tidings_connections", "Open connections on this node", labels=labels
        )
        channels = GaugeMetricFamily(
            "tidings_channels", "Channels with a subscriber on this node", labels=labels
        )
        subscriptions = GaugeMetricFamily(
            "tidings_subscriptions", "Channel subscriptions on this node", labels=labels
        )
        counted = {
            attr: CounterMetricFamily(name, help_, labels=labels)
            for name, help_, attr in APP_COUNTERS
        }
        hooks = {
            name: CounterMetricFamily(f"tidings_webhook_batches_{name}", help_, labels=labels)
            for name, help_ in (
                ("sent", "Webhook requests acknowledged"),
                ("retried", "Webhook attempts that failed and will be retried"),
                ("failed", "Webhook requests dropped after the retry window"),
                ("queued", "Webhook events written to the durable queue, once per URL"),
            )
        }
        for app in self.node.apps:
            value = [app.id]
            n_connections, n_channels, n_subscriptions = self.node.app_gauges(app)
            counters = self.node.counters(app)
            connections.add_metric(value, n_connections)
            channels.add_metric(value, n_channels)
            subscriptions.add_metric(value, n_subscriptions)
            for attr, family in counted.items():
                family.add_metric(value, getattr(counters, attr))
            if self.webhooks is not None:
                stats = self.webhooks.stats[app.id]
                for name, family in hooks.items():
                    family.add_metric(value, getattr(stats, name))
        yield from (connections, channels, subscriptions)
        yield from counted.values()
        yield from self._refusals()
        yield from self._live()
        if self.admission is not None:
            yield from self._http_cuts(self.admission)
        if self.webhooks is not None:
            yield from hooks.values()
            depth = GaugeMetricFamily(
                "tidings_webhook_queue_depth",
                "Webhook events waiting in the durable queue",
                labels=["app", "url"],
            )
            for (app_id, url), n in sorted(self.queue_depths.items()):
                depth.add_metric([app_id, public_url(url)], n)
            yield depth
        if self.round_trips is not None:
            trips = HistogramMetricFamily(
                "tidings_broker_round_trip_seconds",
                "Redis round trips of state scripts and heartbeats (not publications)",
            )
            trips.add_metric([], self.round_trips.cumulative(), self.round_trips.total)
            yield trips
        if self.bus is not None:
            yield from self._bus()

    def _bus(self) -> Iterator[Metric]:
        """What the Redis listener refused or survived (the Redis broker only)."""
        assert self.bus is not None
        dropped = CounterMetricFamily(
            "tidings_redis_dropped_messages",
            "Messages on the Redis bus that no Tidings node wrote, or whose handler failed",
            labels=["reason"],
        )
        for reason, n in sorted(self.bus.dropped.items()):
            dropped.add_metric([reason], n)
        restarts = CounterMetricFamily(
            "tidings_redis_listener_restarts",
            "Times the Redis listener task died and was started again",
        )
        restarts.add_metric([], self.bus.listener_restarts)
        yield from (dropped, restarts)

    def _refusals(self) -> Iterator[Metric]:
        """Errors and close codes sent, and connection-rate refusals, by app and code."""
        errors = CounterMetricFamily(
            "tidings_errors",
            "pusher:error messages sent, by code (null: an error without a code)",
            labels=["app", "code"],
        )
        closes = CounterMetricFamily(
            "tidings_closes",
            "Connections closed by the server, by close code (slow consumers included)",
            labels=["app", "code"],
        )
        rate = CounterMetricFamily(
            "tidings_connection_rate_refusals",
            "New connections answered 503 over max_connection_rate",
            labels=["app"],
        )
        everyone: Iterable[tuple[str, AppCounters]] = [
            *((app.id, self.node.counters(app)) for app in self.node.apps),
            (NO_APP, self.node.unknown_app_counters),
        ]
        for app_id, counters in everyone:
            for code, n in sorted(counters.errors.items(), key=lambda item: item[0] or 0):
                errors.add_metric([app_id, "null" if code is None else str(code)], n)
            sent = dict(counters.closes)
            if counters.slow_consumers:
                over = int(ErrorCode.OVER_CAPACITY)
                sent[over] = sent.get(over, 0) + counters.slow_consumers
            for code, n in sorted(sent.items()):
                closes.add_metric([app_id, str(code)], n)
            if app_id != NO_APP or counters.connection_rate_refusals:
                rate.add_metric([app_id], counters.connection_rate_refusals)
        yield from (errors, closes, rate)

    def _live(self) -> Iterator[Metric]:
        """Snapshots of live channels and the holds that wait for them (live_subscriptions.py)."""
        live = self.node.live_subscriptions
        snapshots = CounterMetricFamily(
            "tidings_live_snapshots",
            "Snapshots of live channels, by how they ended (ok, timeout, refused, invalid, "
            "error, overflow, abandoned)",
            labels=["app", "result"],
        )
        overflows = CounterMetricFamily(
            "tidings_live_hold_overflows",
            "Holds that passed a bound while their snapshot was fetched, by that setting",
            labels=["app", "setting"],
        )
        released = CounterMetricFamily(
            "tidings_live_held_events_released",
            "Events held while a snapshot was fetched, then sent after it",
            labels=["app"],
        )
        waiting = GaugeMetricFamily(
            "tidings_live_snapshots_waiting",
            "Live subscriptions whose snapshot is being fetched",
            labels=["app"],
        )
        for app in self.node.apps:
            stats = live.stats(app)
            for result in SnapshotResult:
                snapshots.add_metric([app.id, result.value], stats.snapshots[result])
            for setting, n in stats.overflows.items():
                overflows.add_metric([app.id, setting], n)
            released.add_metric([app.id], stats.released)
            waiting.add_metric([app.id], live.waiting(app))
        yield from (snapshots, overflows, released, waiting)

    @staticmethod
    def _http_cuts(admission: Admission[Any]) -> Iterator[Metric]:
        """Connections closed before completing a request (server/connection_guard.py)."""
        cuts = CounterMetricFamily(
            "tidings_http_cuts",
            "HTTP connections closed before completing a request, by reason",
            labels=["reason"],
        )
        for reason in Cut:
            cuts.add_metric([reason.value], admission.cuts[reason])
        yield cuts
        yield GaugeMetricFamily(
            "tidings_http_pending_connections",
            "HTTP connections still sending their request (headers or body)",
            value=admission.pending,
        )


class Metrics:
    def __init__(
        self,
        node: Node,
        webhooks: WebhookSender | None,
        round_trips: RoundTrips | None = None,
        admission: Admission[Any] | None = None,
        bus: BusStats | None = None,
    ) -> None:
        self.node = node
        self.webhooks = webhooks
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(node, webhooks, round_trips, admission, bus)
        self.registry.register(self.collector)
        self.rest_latency = Histogram(
            "tidings_rest_request_seconds",
            "REST API requests by app, endpoint and status",
            ["app", "endpoint", "status"],
            registry=self.registry,
        )
        # Each label set's histogram, looked up once: prometheus_client's labels() checks
        # and finds the child under a lock on every call, a cost paid per trigger (issue 18).
        # The keys are the server's, never a client's: a configured app's id (or NO_APP),
        # a route's pattern, a status this server answered; so the map stays small.
        self._rest_latency_of: dict[tuple[str, str, int], Histogram] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.metrics)]

    async def metrics(self, request: web.Request) -> web.Response:
        if self.webhooks is not None:
            self.collector.queue_depths = await self.webhooks.queue_depths()
        body = generate_latest(self.registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    def _app_label(self, request: web.Request) -> str:
        """A configured app's id, else empty: never a value a client made up."""
        app_id = request.match_info.get("app_id")
        app = self.node.apps.by_id(app_id) if app_id else None
        if app is None and app_id is None:
            key = request.query.get("auth_key")
            app = self.node.apps.by_key(key) if key else None
        return app.id if app is not None else NO_APP

    async def observe(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Run a REST request, recording its latency by app, endpoint and status."""
        started = time.perf_counter()
        status = 500  # unless the handler answers
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:  # 404/405 from the router; json_errors answers
            status = exc.status
            raise
        except ConnectionError:
            if request.transport is None:  # the client went away mid-request
                status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            route = request.match_info.route.resource
            endpoint = route.canonical if route is not None else "unknown"
            self.observe_rest(
                self._app_label(request), endpoint, status, time.perf_counter() - started
            )
        return response

    def observe_rest(self, app_label: str, endpoint: str, status: int, seconds: float) -> None:
        """One REST request's latency, by app, endpoint (route pattern) and status."""
        key = (app_label, endpoint, status)
        histogram = self._rest_latency_of.get(key)
        if histogram is None:
            histogram = self.rest_latency.labels(app_label, endpoint, str(status))
            self._rest_latency_of[key] = histogram
        histogram.observe(seconds)
