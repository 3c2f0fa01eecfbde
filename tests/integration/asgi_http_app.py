"""The smallest ASGI app around ``tidings.asgi.http.AsgiHttp``, run by uvicorn in
tests/integration/test_asgi_http.py (``--factory asgi_http_app:create_app``).

Lifespan starts a node (the settings of ``TIDINGS_CONFIG``, memory broker) and the HTTP edge
and drains them at shutdown; Tidings' paths go to the edge, ``/metrics`` shows the REST
histogram the edge fills, anything else is a plain 404. (``rt.asgi()`` is the real
dispatcher; this one keeps the test independent of it.)
"""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from tidings.asgi.http import AsgiHttp, Receive, Scope, Send, route_path
from tidings.config import load_settings
from tidings.protocol.errors import ErrorCode
from tidings.server.app import make_node
from tidings.server.metrics import Metrics

App = Any  # an ASGI callable


def create_app() -> App:
    settings = load_settings()
    node = make_node(settings)
    metrics = Metrics(node, None)
    edge = AsgiHttp(node, settings, metrics)

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await node.start()
                await edge.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await node.drain(ErrorCode.RECONNECT)
                await edge.drain(settings.shutdown_timeout)
                await edge.close()
                await node.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def plain(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http" and edge.handles(route_path(scope)):
            await edge(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/metrics":
            await plain(send, 200, generate_latest(metrics.registry))
        elif scope["type"] == "http":
            await plain(send, 404, b"not a Tidings path")

    return app
