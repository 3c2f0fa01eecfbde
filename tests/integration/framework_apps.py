"""Flask, FastAPI and Django apps wired to one set of auth rules and hooks, and the real
servers that run them in threads (werkzeug's WSGI server, uvicorn; Django under werkzeug).

The app's "session" is the ``X-User`` header: whatever it names is the signed-in user (no
header: nobody); rules read a user with ``str()``, which gives a Django user's username. The
rules:

- ``private-orders.{order_id}``: alice may see order 42, nobody any other (sync handler);
- ``presence-room.{room}``: any signed-in user joins, with a name and the room (async);
- user sign-in: any signed-in user, with a name (sync).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header
from flask import Flask, request
from werkzeug.serving import make_server

from server_process import TIMEOUT, free_port
from tidings import Realtime
from tidings.integrations import fastapi as tidings_fastapi
from tidings.integrations import flask as tidings_flask

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
ORDERS = {"alice": {"42"}}


def make_rt(**settings: Any) -> Realtime:
    """An embedded Realtime (not started: the auth endpoints need no node) with the rules
    above; ``settings`` go to ``Realtime``."""
    rt = Realtime(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, **settings)

    @rt.authorize("private-orders.{order_id}")
    def can_see(user: object, order_id: str) -> bool:
        return order_id in ORDERS.get(str(user), set())

    @rt.presence("presence-room.{room}")
    async def member(user: object, room: str) -> dict[str, Any]:
        return {"user_id": str(user), "user_info": {"name": str(user).title(), "room": room}}

    @rt.user
    def signin(user: object) -> dict[str, Any]:
        return {"id": str(user), "user_info": {"name": str(user).title()}}

    return rt


def flask_app(rt: Realtime) -> Flask:
    app = Flask("tidings-test")
    app.register_blueprint(tidings_flask.blueprint(rt, user=lambda: request.headers.get("X-User")))
    app.register_blueprint(tidings_flask.webhook(rt))
    return app


def current_user(x_user: str | None = Header(default=None)) -> str | None:
    return x_user


def fastapi_app(rt: Realtime) -> FastAPI:
    app = FastAPI()
    app.include_router(tidings_fastapi.router(rt, user=Depends(current_user)))
    app.include_router(tidings_fastapi.webhook(rt))
    return app


@dataclass
class Running:
    url: str  # http://127.0.0.1:port


@contextmanager
def serve_wsgi(app: Any) -> Iterator[Running]:
    """``app`` under werkzeug's threaded WSGI server on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="wsgi", daemon=True)
    thread.start()
    try:
        yield Running(f"http://127.0.0.1:{server.port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@contextmanager
def serve_asgi(app: Any) -> Iterator[Running]:
    """``app`` under uvicorn on a free port, in a thread with its own event loop."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    # uvicorn offers no event for "listening": poll its flag, bounded.
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield Running(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
