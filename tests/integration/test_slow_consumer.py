"""A client that stops reading is closed (4100) and never costs anyone else a message.

The slow client is a raw TCP socket with a tiny receive buffer that completes the WebSocket
handshake, subscribes, and then never reads again; a normal client on the same channel must
receive every one of a flood of events, in order, while the server cuts the slow one off once
its unsent buffer passes ``max_write_buffer``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any

import aiohttp
import psutil
from pusher_helpers import (
    APP_SECRET,
    TIMEOUT,
    eventually,
    hmac_hex,
    query_string,
    rest_request,
    unique,
)

APP_ID = "12345"
APP_KEY = "app-key"
EVENTS = 1200  # x ~10 KB = ~12 MB, well past loopback socket buffers plus the high-water mark
BATCH = 10


def _masked_text_frame(payload: bytes) -> bytes:
    # RFC 6455 5.3: client frames are masked.
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    return header + mask + body


def _read_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """One unmasked server frame (opcode, payload), reading from ``sock`` as needed."""

    def need(n: int) -> None:
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buffer.extend(chunk)

    need(2)
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    offset = 2
    if length == 126:
        need(4)
        length, offset = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        need(10)
        length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
    need(offset + length)
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    return opcode, payload


def _slow_subscriber(port: int, channel: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /app/{APP_KEY}?protocol=7&client=test&version=1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        buffer.extend(sock.recv(4096))
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    buffer = bytearray(rest)
    _, payload = _read_frame(sock, buffer)
    assert json.loads(payload)["event"] == "pusher:connection_established"
    subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}}
    sock.sendall(_masked_text_frame(json.dumps(subscribe).encode()))
    _, payload = _read_frame(sock, buffer)
    assert json.loads(payload)["event"] == "pusher_internal:subscription_succeeded"
    return sock


def _subscription_count(http_url: str, channel: str) -> int:
    resp = rest_request(
        http_url,
        "GET",
        f"/apps/{APP_ID}/channels/{channel}",
        params={"info": "subscription_count"},
    )
    assert resp.status == 200, resp.body
    return int(resp.json().get("subscription_count", 0))


async def test_slow_consumer_is_closed_and_the_others_get_everything(
    make_server: Any, open_socket: Any
) -> None:
    server = make_server(max_write_buffer=65536)
    channel = unique("flood")
    good = await open_socket(server.ws_url)
    await good.subscribe(channel)
    slow = await asyncio.to_thread(_slow_subscriber, server.port, channel)
    try:
        assert await asyncio.to_thread(_subscription_count, server.http_url, channel) == 2
        pad = "x" * 9900

        def flood() -> None:
            for start in range(0, EVENTS, BATCH):
                batch = [
                    {"channel": channel, "name": "tick", "data": json.dumps([n, pad])}
                    for n in range(start, start + BATCH)
                ]
                resp = rest_request(
                    server.http_url,
                    "POST",
                    f"/apps/{APP_ID}/batch_events",
                    json_body={"batch": batch},
                )
                assert resp.status == 200, resp.body

        publisher = asyncio.create_task(asyncio.to_thread(flood))
        received = []
        while len(received) < EVENTS:
            message = await good.recv(timeout=6 * TIMEOUT)
            if message["event"] == "tick":
                received.append(json.loads(message["data"])[0])
        await publisher
        assert received == list(range(EVENTS))

        async def slow_one_gone() -> bool:
            count = await asyncio.to_thread(_subscription_count, server.http_url, channel)
            return count == 1

        await eventually(slow_one_gone, timeout=2 * TIMEOUT)
        assert "slow consumer" in server.logs()
    finally:
        slow.close()


async def test_slow_consumer_sees_close_code_4100_when_it_reads_again(
    make_server: Any, open_socket: Any
) -> None:
    server = make_server(max_write_buffer=65536)
    channel = unique("flood-code")
    slow = await asyncio.to_thread(_slow_subscriber, server.port, channel)
    try:
        pad = "x" * 9900
        for start in range(0, 600, BATCH):
            batch = [
                {"channel": channel, "name": "tick", "data": json.dumps([n, pad])}
                for n in range(start, start + BATCH)
            ]
            resp = await asyncio.to_thread(
                rest_request,
                server.http_url,
                "POST",
                f"/apps/{APP_ID}/batch_events",
                json_body={"batch": batch},
            )
            assert resp.status == 200, resp.body

        def read_until_close() -> int | None:
            buffer = bytearray()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            while True:
                try:
                    opcode, payload = _read_frame(slow, buffer)
                except (ConnectionError, OSError):
                    return None  # dropped before the close frame could be flushed
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

        code = await asyncio.to_thread(read_until_close)
        # The close frame sits behind the unsent buffer: a client that reads again within the
        # server's grace period gets everything queued and then 4100.
        assert code == 4100, code
        assert "slow consumer" in server.logs()
    finally:
        slow.close()


def _signed_batch_url(http_url: str, body: bytes) -> str:
    query = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    path = f"/apps/{APP_ID}/batch_events"
    signature = hmac_hex(APP_SECRET, "\n".join(["POST", path, query_string(query)]))
    return f"{http_url}{path}?{query_string(query)}&auth_signature={signature}"


async def test_a_stalled_client_is_cut_off_while_another_gets_100k_messages_in_bounded_memory(
    make_server: Any, open_socket: Any
) -> None:
    """Issue 7: 100,000 messages to a channel with one reader and one client that never reads.
    The stalled one is closed once past the high-water mark; the reader gets every message in
    order; the server's memory stays bounded (it never queues the stalled client's backlog)."""
    total, batch, publishers = 100_000, 10, 4
    pad = "x" * 500  # ~55 MB of frames in all: more than the bound below
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}
    app["max_backend_events_per_second"] = 1_000_000  # the flood is the point here
    server = make_server(apps=[app], max_write_buffer=1 << 20)
    channel = unique("hundred-k")
    good = await open_socket(server.ws_url)
    await good.subscribe(channel)
    slow = await asyncio.to_thread(_slow_subscriber, server.port, channel)
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    peak = rss_before
    try:

        async def publish(worker: int, http: aiohttp.ClientSession) -> None:
            for start in range(worker * batch, total, publishers * batch):
                events = [
                    {"channel": channel, "name": "n", "data": f"{n} {pad}"}
                    for n in range(start, start + batch)
                ]
                body = json.dumps({"batch": events}).encode()
                url = _signed_batch_url(server.http_url, body)
                headers = {"Content-Type": "application/json"}
                async with http.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()

        async def publish_all() -> None:
            async with aiohttp.ClientSession() as http:
                await asyncio.gather(*(publish(w, http) for w in range(publishers)))

        publishing = asyncio.create_task(publish_all())
        received: list[int] = []
        while len(received) < total:
            message = await good.recv(timeout=10 * TIMEOUT)
            if message["event"] == "n":
                received.append(int(message["data"].split(" ", 1)[0]))
            if len(received) % 5_000 == 0:
                peak = max(peak, process.memory_info().rss)
        await publishing
        peak = max(peak, process.memory_info().rss)
        # Each batch is published in order, batches from 4 publishers interleave: per
        # publisher the order holds, and nothing is missing or repeated.
        assert sorted(received) == list(range(total))
        for w in range(publishers):
            mine = [n for n in received if (n // batch) % publishers == w]
            assert mine == sorted(mine)

        async def stalled_one_gone() -> bool:
            count = await asyncio.to_thread(_subscription_count, server.http_url, channel)
            return count == 1

        await eventually(stalled_one_gone, timeout=2 * TIMEOUT)
        assert "slow consumer" in server.logs()
        # 100k messages (~55 MB of frames) went out; had the stalled client's backlog been
        # kept, it alone would pass this bound (1 MiB high-water mark, then cut off).
        assert peak - rss_before < 25 * 1024 * 1024, (rss_before, peak)
    finally:
        slow.close()
