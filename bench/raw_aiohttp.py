"""The ceiling for Tidings' stack: a raw aiohttp broadcast server, no protocol logic.

It speaks just enough of the Pusher wire format for bench/loadclient.c to treat it like
Tidings (connection_established on connect, subscription_succeeded on any subscribe,
pong on ping) and takes publishes on the same REST paths (events, and batch_events for
bench/publish.py), but it checks no signature, validates nothing, and broadcasts the way
reference/websocket-stacks.md calls `pre`: the frame is encoded once and written with
`transport.write()` to every subscriber.

    python bench/raw_aiohttp.py --host 127.0.0.1 --port 6001
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import orjson
from aiohttp import WSMsgType, web

ESTABLISHED = orjson.dumps(
    {
        "event": "pusher:connection_established",
        "data": orjson.dumps({"socket_id": "1.1", "activity_timeout": 120}).decode(),
    }
).decode()
PONG = '{"event":"pusher:pong","data":"{}"}'
SUBSCRIBERS: set[asyncio.Transport] = set()


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def subscriber(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    transport = request.transport
    await ws.send_str(ESTABLISHED)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if "pusher:subscribe" in msg.data:
                channel = orjson.loads(msg.data)["data"]["channel"]
                if transport is not None:
                    SUBSCRIBERS.add(transport)
                await ws.send_str(
                    orjson.dumps(
                        {
                            "event": "pusher_internal:subscription_succeeded",
                            "channel": channel,
                            "data": "{}",
                        }
                    ).decode()
                )
            elif "pusher:ping" in msg.data:
                await ws.send_str(PONG)
    finally:
        if transport is not None:
            SUBSCRIBERS.discard(transport)
    return ws


def broadcast(event: dict[str, str]) -> None:
    frame = text_frame(
        orjson.dumps({"event": event["name"], "channel": event["channel"], "data": event["data"]})
    )
    for transport in SUBSCRIBERS:
        transport.write(frame)


async def publish(request: web.Request) -> web.Response:
    broadcast(orjson.loads(await request.read()))
    return web.Response(body=b"{}", content_type="application/json")


async def publish_batch(request: web.Request) -> web.Response:
    for event in orjson.loads(await request.read())["batch"]:
        broadcast(event)
    return web.Response(body=b"{}", content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/app/{key}", subscriber)
    app.router.add_post("/apps/{app_id}/events", publish)
    app.router.add_post("/apps/{app_id}/batch_events", publish_batch)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6001)
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
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
