"""``GET /`` (what is this) and ``GET /ready`` (can it take traffic).

``/ready`` is 503 only while draining. When the Redis broker cannot reach Redis the node
still serves its own clients, so ``/ready`` stays 200 and says ``"degraded": true``: a 503
there would make a load balancer drop every node at once during a Redis outage.
"""

from __future__ import annotations

from aiohttp import web

from tidings import __version__
from tidings.brokers.base import Broker


class Health:
    def __init__(self, broker: Broker, broker_name: str) -> None:
        self.broker = broker
        self.broker_name = broker_name
        self.draining = False

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.index), web.get("/ready", self.ready)]

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "tidings", "version": __version__})

    async def ready(self, request: web.Request) -> web.Response:
        body = {
            "ready": not self.draining,
            "broker": self.broker_name,
            "degraded": self.broker.degraded,
            "node": self.broker.node_id,
        }
        if self.draining:
            body["reason"] = "draining"
            return web.json_response(body, status=503)
        return web.json_response(body)
