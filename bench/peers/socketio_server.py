"""python-socketio on aiohttp + uvloop: the peer Flask-SocketIO users would run.

A room broadcast, as an application does it: every client joins the room ``bench`` by
emitting ``subscribe`` (with an ack, so the load client knows when it is in), and
``POST /apps/{app_id}/events`` takes the very body the load client sends to Tidings and Soketi
(``{"name","channel","data"}``) and does ``await sio.emit(name, data, room=channel)``. It checks
no signature (python-socketio has no REST API; an application's own publish endpoint would
check its own auth), which only favours this peer. Stock settings otherwise: Engine.IO pings
every 25 s, WebSocket transport (the load client connects with ``transport=websocket``).

Runs from the venv bench/servers.py builds in .cache/bench/venv:

    .cache/bench/venv/bin/python bench/peers/socketio_server.py --port 6001
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")


@sio.on("subscribe")
async def subscribe(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"  # sent back as the ack of the client's 420["subscribe",...]


async def publish(request: web.Request) -> web.Response:
    event = orjson.loads(await request.read())
    await sio.emit(event["name"], event["data"], room=event["channel"])
    return web.Response(body=b"{}", content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def make_app() -> web.Application:
    app = web.Application()
    sio.attach(app)
    app.router.add_post("/apps/{app_id}/events", publish)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6001)
    args = parser.parse_args()
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
