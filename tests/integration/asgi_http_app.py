"""The smallest ASGI apps around ``tidings.asgi.http.AsgiHttp``, run by uvicorn for
tests/integration/test_asgi_http.py and tests/browser/test_asgi_fallback.py.

A ``Lifecycle`` (the settings of ``TIDINGS_CONFIG``, memory broker) with the HTTP edge added
starts in lifespan and drains at shutdown. Tidings' paths go to the edge, ``/metrics`` shows
the REST histogram the edge fills, anything else is a plain 404. ``create_app`` serves them at
the root, ``create_mounted_app`` inside Starlette under ``/rt``. (``rt.asgi()`` is the real
dispatcher; these keep the tests independent of it.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.routing import Mount

from tidings import logs
from tidings.asgi.http import AsgiHttp, Receive, Scope, Send, route_path
from tidings.config import load_settings
from tidings.lifecycle import Lifecycle
from tidings.server.metrics import Metrics

MOUNT = "/rt"


class EdgeApp:
    """HTTP scopes only; :meth:`running` is the lifespan."""

    def __init__(self) -> None:
        self.settings = load_settings()
        if self.settings.debug:  # as `tidings serve --debug`: Tidings' own debug lines
            logs.setup(self.settings.log_level, "text")
            logging.getLogger("tidings").setLevel(logging.DEBUG)
        self.lifecycle = Lifecycle(self.settings)
        self.metrics: Metrics | None = None
        self.edge: AsgiHttp | None = None

    @asynccontextmanager
    async def running(self, _: Any = None) -> AsyncIterator[None]:
        await self.lifecycle.start()
        self.metrics = self.lifecycle.metrics()
        self.edge = AsgiHttp(self.lifecycle.node, self.settings, self.metrics)
        await self.lifecycle.add(self.edge)
        yield
        await self.lifecycle.drain()
        await self.lifecycle.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", scope["type"]
        assert self.edge is not None and self.metrics is not None, "lifespan did not run"
        path = route_path(scope)
        if self.edge.handles(path):
            await self.edge(scope, receive, send)
        elif path == "/metrics":
            await plain(send, 200, generate_latest(self.metrics.registry))
        else:
            await plain(send, 404, b"not a Tidings path")


async def plain(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> Any:
    app = EdgeApp()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        assert (await receive())["type"] == "lifespan.startup"
        async with app.running():
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})

    return serve


def create_mounted_app() -> Any:
    app = EdgeApp()
    return Starlette(routes=[Mount(MOUNT, app=app)], lifespan=app.running)
