"""The smallest ASGI apps around ``tidings.asgi.http.AsgiHttp``, run by uvicorn for
tests/integration/test_asgi_http.py and tests/browser/test_asgi_fallback.py.

A node (the settings of ``TIDINGS_CONFIG``, memory broker) and the HTTP edge start in lifespan
and drain at shutdown; Tidings' paths go to the edge, ``/metrics`` shows the REST histogram
the edge fills, anything else is a plain 404. ``create_app`` serves them at the root,
``create_mounted_app`` inside Starlette under ``/rt``. (``rt.asgi()`` is the real dispatcher;
these keep the tests independent of it.)
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
from tidings.protocol.errors import ErrorCode
from tidings.server.app import make_node
from tidings.server.metrics import Metrics

MOUNT = "/rt"


class EdgeApp:
    """HTTP scopes only; :meth:`running` is the lifespan."""

    def __init__(self) -> None:
        self.settings = load_settings()
        if self.settings.debug:  # as `tidings serve --debug`: Tidings' own debug lines
            logs.setup(self.settings.log_level, "text")
            logging.getLogger("tidings").setLevel(logging.DEBUG)
        self.node = make_node(self.settings)
        self.metrics = Metrics(self.node, None)
        self.edge = AsgiHttp(self.node, self.settings, self.metrics)

    @asynccontextmanager
    async def running(self, _: Any = None) -> AsyncIterator[None]:
        await self.node.start()
        await self.edge.start()
        yield
        await self.node.drain(ErrorCode.RECONNECT)
        await self.edge.drain(self.settings.shutdown_timeout)
        await self.edge.close()
        await self.node.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", scope["type"]
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
