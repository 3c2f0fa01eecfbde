"""``GET /`` (what is this) and ``GET /ready`` (can it take traffic)."""

from __future__ import annotations

from aiohttp import web

from tidings import __version__


class Health:
    def __init__(self) -> None:
        self.draining = False

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.index), web.get("/ready", self.ready)]

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "tidings", "version": __version__})

    async def ready(self, request: web.Request) -> web.Response:
        # Load balancers stop routing here as soon as a drain starts.
        if self.draining:
            return web.json_response({"ready": False, "reason": "draining"}, status=503)
        return web.json_response({"ready": True})
