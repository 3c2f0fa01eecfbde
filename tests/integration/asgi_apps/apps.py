"""ASGI apps that tests/integration/test_asgi.py and tests/e2e/test_pusher_js_asgi.py serve
with real uvicorn and hypercorn processes. ``TIDINGS_TEST_ASGI_APP`` picks one:

- ``plain``: Tidings alone (``rt.asgi()``), behind a thin router that serves the
  tests' ``POST /test/publish`` and hands every other scope, lifespan included, to Tidings;
- ``fastapi``: a FastAPI app wrapped by Tidings (``rt.asgi(fastapi_app)``), its
  lifespan recorded;
- ``fastapi_signals_off``: the same with ``handle_signals=False`` (the server alone
  handles SIGTERM);
- ``mounted``: Tidings mounted under ``/rt`` in a Starlette app (no lifespan reaches it);
- ``legacy_mount``: mounted under ``/rt`` the way Starlette did before 0.33;
- ``django``: Django's ``get_asgi_application()`` wrapped by Tidings.

``TIDINGS_TEST_EVENTS`` names a file where the lifecycle is recorded, one line per event
("tidings started", "app startup", ...); ``TIDINGS_TEST_MAX_WRITE_BUFFER`` sets
max_write_buffer, ``TIDINGS_TEST_MAX_CONNECTION_RATE`` max_connection_rate;
``TIDINGS_TEST_BROKEN_START`` makes the runtime's start fail;
``TIDINGS_TEST_SHUTDOWN_READY_DELAY`` sets shutdown_ready_delay (default 0);
``TIDINGS_TEST_BROKER`` and ``TIDINGS_TEST_REDIS_PREFIX`` a Redis broker (for several
workers); ``TIDINGS_TEST_HISTORY`` the app's history rules (JSON, as in a config
file). The runtime is a ``tidings.Realtime`` (one app: 12345, app-key, app-secret) that
records its start and stop.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from tidings import Realtime
from tidings.asgi import TidingsASGI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def record(event: str) -> None:
    path = os.environ.get("TIDINGS_TEST_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


class RecordedRealtime(Realtime):
    """A ``tidings.Realtime`` whose start and stop are recorded (``TIDINGS_TEST_EVENTS``),
    and whose start fails when ``TIDINGS_TEST_BROKEN_START`` is set."""

    async def start(self) -> None:
        if os.environ.get("TIDINGS_TEST_BROKEN_START"):
            raise RuntimeError("the broker is unreachable (TIDINGS_TEST_BROKEN_START)")
        await super().start()
        record("tidings started")

    async def stop(self) -> None:
        await super().stop()
        record("tidings stopped")


def make_runtime() -> RecordedRealtime:
    return RecordedRealtime(
        app_id="12345",
        key="app-key",
        secret="app-secret",
        max_write_buffer=int(os.environ.get("TIDINGS_TEST_MAX_WRITE_BUFFER", 1024 * 1024)),
        max_connection_rate=int(os.environ.get("TIDINGS_TEST_MAX_CONNECTION_RATE", 10_000)),
        shutdown_ready_delay=float(os.environ.get("TIDINGS_TEST_SHUTDOWN_READY_DELAY", 0)),
        **redis_settings(),
        **history_settings(),
    )


def history_settings() -> dict[str, Any]:
    rules = os.environ.get("TIDINGS_TEST_HISTORY")
    return {} if rules is None else {"history": json.loads(rules)}


def redis_settings() -> dict[str, Any]:
    broker = os.environ.get("TIDINGS_TEST_BROKER")
    if broker is None:
        return {}
    return {"broker": broker, "redis_prefix": os.environ["TIDINGS_TEST_REDIS_PREFIX"]}


async def publish(runtime: RecordedRealtime, request: dict[str, Any]) -> dict[str, Any]:
    """``count`` events named ``tick`` on ``channel``, each ``[n, padding]``, published with
    ``rt.atrigger`` (the embedded node's API, on the server's loop)."""
    pad = "x" * int(request.get("size", 0))
    start = int(request.get("start", 0))
    for n in range(start, start + int(request["count"])):
        await runtime.atrigger(request["channel"], "tick", [n, pad])
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
    tidings = runtime.asgi()

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/test/publish":
            request = json.loads(await read_body(receive))
            await send_json(send, 200, await publish(runtime, request))
        else:
            await tidings(scope, receive, send)

    return router


def fastapi(handle_signals: bool = True) -> TidingsASGI:
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
        return {"hello": "fastapi", "connections": runtime.lifecycle.node.connection_count}

    @api.post("/test/publish")
    async def publish_route(request: dict[str, Any]) -> dict[str, Any]:
        return await publish(runtime, request)

    @api.get("/test/draining")
    async def draining() -> dict[str, Any]:
        return {"draining": runtime.lifecycle.health.draining}

    return runtime.asgi(api, handle_signals=handle_signals)


def fastapi_signals_off() -> TidingsASGI:
    return fastapi(handle_signals=False)


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
            Mount("/rt", runtime.asgi()),
        ]
    )


def legacy_mount() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Tidings under ``/rt`` as Starlette mounted apps before 0.33: ``root_path`` holds the
    mount point and ``path`` is what is left of the path below it."""
    runtime = make_runtime()
    tidings = runtime.asgi()

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

        connections = runtime.lifecycle.node.connection_count
        return JsonResponse({"hello": "django", "connections": connections})

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

    return runtime.asgi(get_asgi_application())


urlpatterns: list[Any] = []
APPS = {
    "plain": plain,
    "fastapi": fastapi,
    "fastapi_signals_off": fastapi_signals_off,
    "mounted": mounted,
    "legacy_mount": legacy_mount,
    "django": django,
}
application = APPS[os.environ.get("TIDINGS_TEST_ASGI_APP", "plain")]()
