"""ASGI apps that tests/integration/test_asgi.py and tests/e2e/test_pusher_js_asgi.py serve
with real uvicorn and hypercorn processes. ``TIDINGS_TEST_ASGI_APP`` picks one:

- ``plain``: Tidings alone (``TidingsASGI(runtime)``), behind a thin router that serves the
  tests' ``POST /test/publish`` and hands every other scope, lifespan included, to Tidings;
- ``fastapi``: a FastAPI app wrapped by Tidings (``TidingsASGI(runtime, fastapi_app)``), its
  lifespan recorded;
- ``mounted``: Tidings mounted under ``/rt`` in a Starlette app (no lifespan reaches it);
- ``legacy_mount``: mounted under ``/rt`` the way Starlette did before 0.33;
- ``django``: Django's ``get_asgi_application()`` wrapped by Tidings.

``TIDINGS_TEST_EVENTS`` names a file where the lifecycle is recorded, one line per event
("tidings started", "app startup", ...); ``TIDINGS_TEST_MAX_WRITE_BUFFER`` sets
max_write_buffer, ``TIDINGS_TEST_MAX_CONNECTION_RATE`` max_connection_rate;
``TIDINGS_TEST_BROKEN_START`` makes the runtime's start fail. The runtime
is a stand-in for ``tidings.Realtime``: the node of ``tidings serve``, built with the ASGI
writer, started and drained the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from tidings.asgi import TidingsASGI, write_to_asgi
from tidings.config import AppSettings, Settings
from tidings.core.apps import AppRegistry
from tidings.node import Node, NodeSettings
from tidings.protocol.rest import Trigger
from tidings.server.app import make_broker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def record(event: str) -> None:
    path = os.environ.get("TIDINGS_TEST_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


class NodeRuntime:
    """What ``TidingsASGI`` needs of a ``tidings.Realtime``: node, settings, start, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._node: Node | None = None

    @property
    def node(self) -> Node:
        assert self._node is not None, "read before start()"
        return self._node

    async def start(self) -> None:
        if os.environ.get("TIDINGS_TEST_BROKEN_START"):
            raise RuntimeError("the broker is unreachable (TIDINGS_TEST_BROKEN_START)")
        settings = self.settings
        apps = AppRegistry.of(app.to_app() for app in settings.apps)
        node_settings = NodeSettings(
            activity_timeout=settings.activity_timeout,
            pong_timeout=settings.pong_timeout,
            max_connection_rate=settings.max_connection_rate,
        )
        self._node = Node(apps, make_broker(settings), node_settings, write=write_to_asgi)
        await self._node.start()
        record("tidings started")

    async def stop(self) -> None:
        await self.node.drain()
        await self.node.close()
        record("tidings stopped")


def make_runtime() -> NodeRuntime:
    return NodeRuntime(
        Settings(
            apps=(AppSettings(id="12345", key="app-key", secret="app-secret"),),
            max_write_buffer=int(os.environ.get("TIDINGS_TEST_MAX_WRITE_BUFFER", 1024 * 1024)),
            max_connection_rate=int(os.environ.get("TIDINGS_TEST_MAX_CONNECTION_RATE", 10_000)),
        )
    )


async def publish(runtime: NodeRuntime, request: dict[str, Any]) -> dict[str, Any]:
    """``count`` events named ``tick`` on ``channel``, each ``[n, padding]``, through the node."""
    node = runtime.node
    app = node.apps.by_key("app-key")
    assert app is not None
    pad = "x" * int(request.get("size", 0))
    start = int(request.get("start", 0))
    for n in range(start, start + int(request["count"])):
        data = json.dumps([n, pad])
        await node.trigger(app, Trigger("tick", data, (request["channel"],), None, ()))
    return {"published": int(request["count"])}


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def send_json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def plain() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    runtime = make_runtime()
    tidings = TidingsASGI(runtime)

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/test/publish":
            request = json.loads(await read_body(receive))
            await send_json(send, 200, await publish(runtime, request))
        else:
            await tidings(scope, receive, send)

    return router


def fastapi() -> TidingsASGI:
    from fastapi import FastAPI

    runtime = make_runtime()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        record("app startup")
        yield
        record("app shutdown")

    api = FastAPI(lifespan=lifespan)

    @api.get("/hello")
    async def hello() -> dict[str, Any]:
        return {"hello": "fastapi", "connections": runtime.node.connection_count}

    @api.post("/test/publish")
    async def publish_route(request: dict[str, Any]) -> dict[str, Any]:
        return await publish(runtime, request)

    return TidingsASGI(runtime, api)


def mounted() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    runtime = make_runtime()

    async def publish_route(request: Request) -> JSONResponse:
        return JSONResponse(await publish(runtime, await request.json()))

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": "starlette"})

    return Starlette(
        routes=[
            Route("/test/publish", publish_route, methods=["POST"]),
            Route("/hello", hello),
            Mount("/rt", TidingsASGI(runtime)),
        ]
    )


def legacy_mount() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Tidings under ``/rt`` as Starlette mounted apps before 0.33: ``root_path`` holds the
    mount point and ``path`` is what is left of the path below it."""
    runtime = make_runtime()
    tidings = TidingsASGI(runtime)

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/test/publish":
            request = json.loads(await read_body(receive))
            await send_json(send, 200, await publish(runtime, request))
        elif path.startswith("/rt/"):
            await tidings({**scope, "root_path": "/rt", "path": path[3:]}, receive, send)
        else:
            await tidings(scope, receive, send)

    return router


def django() -> TidingsASGI:
    from django.conf import settings

    runtime = make_runtime()

    async def hello(request: Any) -> Any:
        from django.http import JsonResponse

        return JsonResponse({"hello": "django", "connections": runtime.node.connection_count})

    async def publish_view(request: Any) -> Any:
        from django.http import JsonResponse

        return JsonResponse(await publish(runtime, json.loads(request.body)))

    from django.urls import path

    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    global urlpatterns
    urlpatterns = [path("django/hello", hello), path("test/publish", publish_view)]

    from django.core.asgi import get_asgi_application

    return TidingsASGI(runtime, get_asgi_application())


urlpatterns: list[Any] = []
APPS = {
    "plain": plain,
    "fastapi": fastapi,
    "mounted": mounted,
    "legacy_mount": legacy_mount,
    "django": django,
}
application = APPS[os.environ.get("TIDINGS_TEST_ASGI_APP", "plain")]()
