"""python-socketio's ``ASGIApp`` under uvicorn: the ASGI peer of Tidings-ASGI.

The same room broadcast as bench/peers/socketio_server.py (its aiohttp twin): every client
joins the room ``bench`` by emitting ``subscribe`` (acked), and ``POST /apps/{app_id}/events``
takes the load client's Pusher REST body (``{"name","channel","data"}``, signature not
checked) and does ``await sio.emit(name, data, room=channel)``. Everything that is not
``/socket.io/`` goes to a few lines of plain ASGI (``routes``), which also answer lifespan
and ``GET /ready``, so no framework sits between uvicorn and python-socketio.

Runs from the venv bench/servers.py builds in .cache/bench/venv, under the uvicorn command
of ``servers.uvicorn_command``:

    .cache/bench/venv/bin/python -m uvicorn --app-dir bench/peers socketio_asgi:app \\
        --loop uvloop --ws-per-message-deflate false --port 6001
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import socketio

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EVENTS_PATH = re.compile(r"/apps/[^/]+/events")
JSON = [(b"content-type", b"application/json")]

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")


@sio.on("subscribe")
async def subscribe(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"  # sent back as the ack of the client's 420["subscribe",...]


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start: acknowledge startup and shutdown (uvicorn runs with --lifespan on)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def routes(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The publish endpoint, readiness and lifespan: what socketio.ASGIApp forwards."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] != "http":
        return
    elif scope["method"] == "POST" and EVENTS_PATH.fullmatch(scope["path"]):
        event = orjson.loads(await read_body(receive))
        await sio.emit(event["name"], event["data"], room=event["channel"])
        await respond(send, 200, b"{}")
    elif scope["path"] == "/ready":
        await respond(send, 200, b'{"ready":true}')
    else:
        await respond(send, 404, b'{"error":"not found"}')


app = socketio.ASGIApp(sio, other_asgi_app=routes)
