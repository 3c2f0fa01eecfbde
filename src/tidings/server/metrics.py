"""``GET /metrics``: Prometheus text format, labelled by app.

Gauges and counters are read from the node at scrape time (the hot path only bumps plain
integers). Secrets never appear: apps are labelled by id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tidings.node import Node
from tidings.server.webhooks import WebhookSender


class NodeCollector(Collector):
    def __init__(self, node: Node, webhooks: WebhookSender | None) -> None:
        self.node = node
        self.webhooks = webhooks

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
        opened = CounterMetricFamily(
            "tidings_connections_opened", "Connections accepted", labels=labels
        )
        received = CounterMetricFamily(
            "tidings_messages_received", "Messages received from clients", labels=labels
        )
        published = CounterMetricFamily(
            "tidings_publications", "Events published to channels", labels=labels
        )
        delivered = CounterMetricFamily(
            "tidings_deliveries", "Messages written to subscribers", labels=labels
        )
        slow = CounterMetricFamily(
            "tidings_slow_consumer_closes", "Connections closed as slow consumers", labels=labels
        )
        hooks = {
            name: CounterMetricFamily(f"tidings_webhook_batches_{name}", help_, labels=labels)
            for name, help_ in (
                ("sent", "Webhook batches acknowledged"),
                ("retried", "Webhook attempts that failed and will be retried"),
                ("failed", "Webhook batches dropped after the retry window"),
                ("queued", "Webhook batches written to the durable queue"),
            )
        }
        for app in self.node.apps:
            value = [app.id]
            n_connections, n_channels, n_subscriptions = self.node.app_gauges(app)
            counters = self.node.counters(app)
            connections.add_metric(value, n_connections)
            channels.add_metric(value, n_channels)
            subscriptions.add_metric(value, n_subscriptions)
            opened.add_metric(value, counters.connections_opened)
            received.add_metric(value, counters.messages_in)
            published.add_metric(value, counters.publications)
            delivered.add_metric(value, counters.deliveries)
            slow.add_metric(value, counters.slow_consumers)
            if self.webhooks is not None:
                stats = self.webhooks.stats[app.id]
                for name, family in hooks.items():
                    family.add_metric(value, getattr(stats, name))
        yield from (
            connections,
            channels,
            subscriptions,
            opened,
            received,
            published,
            delivered,
            slow,
        )
        if self.webhooks is not None:
            yield from hooks.values()


class Metrics:
    def __init__(self, node: Node, webhooks: WebhookSender | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node, webhooks))
        self.rest_latency = Histogram(
            "tidings_rest_request_seconds",
            "REST API requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.metrics)]

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(("/apps/", "/users/")):
            return await handler(request)
        started = time.perf_counter()
        response = await handler(request)
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unknown"
        self.rest_latency.labels(endpoint, str(response.status)).observe(
            time.perf_counter() - started
        )
        return response
