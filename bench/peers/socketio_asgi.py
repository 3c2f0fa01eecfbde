"""python-socketio's ``ASGIApp`` under uvicorn: the ASGI peer of Tidings-ASGI.

The same room broadcast as bench/peers/socketio_server.py (its aiohttp twin): every client
joins the room ``bench`` by emitting ``subscribe`` (acked), and ``POST /apps/{app_id}/events``
takes the load client's Pusher REST body (``{"name","channel","data"}``, signature not
checked) and does ``await sio.emit(name, data, room=channel)``. Everything that is not
``/socket.io/`` goes to ``routes``: that endpoint, then plain ASGI (bench/peers/plain_asgi.py:
lifespan, ``GET /ready``), so no framework sits between uvicorn and python-socketio.

Runs from the venv bench/servers.py builds in .cache/bench/venv, under the uvicorn command
of ``servers.uvicorn_command``:

    .cache/bench/venv/bin/python -m uvicorn --app-dir bench/peers socketio_asgi:app \\
        --loop uvloop --ws-per-message-deflate false --port 6001
"""

from __future__ import annotations

import re

import orjson
import socketio
from plain_asgi import Receive, Scope, Send, read_body, ready, respond

EVENTS_PATH = re.compile(r"/apps/[^/]+/events")

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")


@sio.on("subscribe")
async def subscribe(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"  # sent back as the ack of the client's 420["subscribe",...]


async def routes(scope: Scope, receive: Receive, send: Send) -> None:
    """The publish endpoint; the rest is plain_asgi.ready (lifespan, /ready, 404)."""
    if scope["type"] == "http" and scope["method"] == "POST":
        if EVENTS_PATH.fullmatch(scope["path"]):
            event = orjson.loads(await read_body(receive))
            await sio.emit(event["name"], event["data"], room=event["channel"])
            await respond(send, 200, b"{}")
            return
    await ready(scope, receive, send)


app = socketio.ASGIApp(sio, other_asgi_app=routes)
