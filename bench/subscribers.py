"""Subscribers for bench/publish.py: a few Pusher WebSocket clients of one channel, in one
process, that read and throw away what they are sent (a benchmark helper, not a test).

    python bench/subscribers.py --port 6001 --key app-key --channel bench --n 100

Each client sends the WebSocket handshake, waits for ``pusher:connection_established``,
subscribes to the channel and waits for ``pusher_internal:subscription_succeeded``; then
the process prints ``{"ready": N}`` on stdout. From there every byte received is only
counted: a delivery is an occurrence of the event's ``"event":"e"`` (bytes.count in C, no
frame parsing), enough to check that the server fanned out what it accepted. On a line on
stdin (or its end) it prints ``{"deliveries": D, "closed": C}`` and exits.

asyncio protocols on uvloop rather than a WebSocket library: one ``data_received`` takes
every frame that arrived together, so 100 subscribers of a channel triggered thousands of
times a second cost the client core little next to wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from typing import cast

import orjson
import uvloop

DELIVERY = b'"event":"e"'
ESTABLISHED = b"pusher:connection_established"
SUBSCRIBED = b"pusher_internal:subscription_succeeded"


def masked_text_frame(payload: bytes) -> bytes:
    """A final, masked text frame (clients must mask: RFC 6455 5.3); payload < 126 bytes."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + body


class Subscriber(asyncio.Protocol):
    def __init__(self, host: str, port: int, key: str, channel: str) -> None:
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.handshake = (
            f"GET /app/{key}?protocol=7&client=bench&version=1 HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}}
        self.subscribe = masked_text_frame(orjson.dumps(subscribe))
        self.transport: asyncio.Transport | None = None
        self.seen = b""  # until subscribed: what arrived so far
        self.established = asyncio.get_running_loop().create_future()
        self.subscribed = asyncio.get_running_loop().create_future()
        self.deliveries = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        if self.subscribed.done():
            self.deliveries += data.count(DELIVERY)
            return
        self.seen += data
        if not self.established.done() and ESTABLISHED in self.seen:
            self.established.set_result(None)
            assert self.transport is not None
            self.transport.write(self.subscribe)
        if SUBSCRIBED in self.seen:
            self.subscribed.set_result(None)
            self.deliveries += self.seen.split(SUBSCRIBED, 1)[1].count(DELIVERY)
            self.seen = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for waiter in (self.established, self.subscribed):
            if not waiter.done():
                waiter.set_exception(ConnectionError("closed before subscribing"))


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []
    for _ in range(args.n):
        _, sub = await loop.create_connection(
            lambda: Subscriber(args.host, args.port, args.key, args.channel), args.host, args.port
        )
        subscribers.append(sub)
    await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in subscribers)), 30)
    print(orjson.dumps({"ready": len(subscribers)}).decode(), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    report = {
        "deliveries": sum(s.deliveries for s in subscribers),
        "closed": sum(s.closed for s in subscribers),
    }
    print(orjson.dumps(report).decode(), flush=True)
    for sub in subscribers:
        if sub.transport is not None:
            sub.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--n", type=int, required=True)
    uvloop.run(main(parser.parse_args()))
