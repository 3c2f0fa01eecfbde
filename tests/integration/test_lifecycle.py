"""Graceful stop of a real `tidings serve`: the order of SIGTERM/SIGINT's steps, observed.

1. ``/ready`` answers 503 while connected clients are still open (``shutdown_ready_delay``),
2. then every socket gets 4200,
3. an in-flight REST request still completes,
4. pending webhooks are written to the durable queue before exit;
and a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    SocketOpener,
    hmac_hex,
    query_string,
    raw_http,
    unique,
)

from server_process import ServerProcess

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

READY_DELAY = 1.5


def signed_target(path: str, body: bytes) -> str:
    query = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    signature = hmac_hex(APP_SECRET, "\n".join(["POST", path, query_string(query)]))
    return f"{path}?{query_string(query)}&auth_signature={signature}"


def ready_status(srv: ServerProcess) -> int | None:
    try:
        return raw_http(srv.http_url, "GET", "/ready").status
    except OSError:
        return None  # the listener is closed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_ready_turns_503_before_sockets_get_4200_and_in_flight_rest_completes(
    make_server: Any, open_socket: SocketOpener, sig: signal.Signals
) -> None:
    srv = make_server(env={"TIDINGS_SHUTDOWN_READY_DELAY": str(READY_DELAY)})
    channel = unique("draining")
    client = await open_socket(srv.ws_url)
    await client.subscribe(channel)

    # A REST request in flight: headers and half the body sent before the signal.
    body = json.dumps({"name": "late", "channel": channel, "data": "x" * 1000}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    head = (
        f"POST {signed_target(f'/apps/{APP_ID}/events', body)} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:500])
    await writer.drain()
    await asyncio.sleep(0.2)  # the server is reading the body

    assert srv.proc is not None
    srv.proc.send_signal(sig)
    signalled = time.monotonic()

    # 1. /ready turns 503 while the client is still connected and served.
    deadline = signalled + TIMEOUT
    while ready_status(srv) != 503:
        assert time.monotonic() < deadline, "/ready never answered 503"
        await asyncio.sleep(0.05)
    await client.ping()
    resp = raw_http(srv.http_url, "GET", "/ready")
    assert resp.status == 503 and resp.json()["reason"] == "draining", resp

    # 2. Then the client is told to reconnect, not before the delay.
    closed = await client.wait_closed(timeout=READY_DELAY + TIMEOUT)
    assert closed.code == 4200, closed
    assert time.monotonic() - signalled >= READY_DELAY * 0.9

    # 3. The in-flight request finishes and is answered.
    writer.write(body[500:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    writer.close()

    assert await asyncio.to_thread(srv.proc.wait, 3 * TIMEOUT) == 0, srv.logs()


async def test_second_signal_exits_at_once(make_server: Any, open_socket: SocketOpener) -> None:
    srv = make_server(env={"TIDINGS_SHUTDOWN_READY_DELAY": "60"})
    client = await open_socket(srv.ws_url)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + TIMEOUT
    while ready_status(srv) != 503:
        assert time.monotonic() < deadline, "/ready never answered 503"
        await asyncio.sleep(0.05)
    await client.ping()  # still in the 60 s pause
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(srv.proc.wait, TIMEOUT)
    assert code != 0, srv.logs()
    assert time.monotonic() - started < TIMEOUT / 2
    assert "second signal" in srv.logs()


async def test_pending_webhooks_are_written_to_the_queue_on_sigterm(
    make_server: Any, open_socket: SocketOpener, tmp_path: Path
) -> None:
    """channel_occupied is queued at once (not after the 60 s batch delay); the vacancy held
    for 60 s is released into the queue by SIGTERM."""
    queue = tmp_path / "webhooks.sqlite3"
    app = {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        # Nothing listens there: batches must stay queued, not be delivered.
        "webhooks": [
            {
                "url": "http://127.0.0.1:9/hooks",
                "event_types": ["channel_occupied", "channel_vacated"],
            }
        ],
    }
    srv = make_server(
        apps=[app], webhook_queue=str(queue), webhook_batch_delay=60, webhook_vacated_delay=60
    )
    channel = unique("occupied")
    client = await open_socket(srv.ws_url)
    await client.subscribe(channel)
    await client.send_event("pusher:unsubscribe", {"channel": channel})
    await client.ping()

    def queued() -> list[Any]:
        with sqlite3.connect(queue) as db:
            rows = db.execute("SELECT key, body FROM batches ORDER BY id").fetchall()
            held = db.execute("SELECT event FROM held").fetchall()
        return [(key, json.loads(body)["events"]) for key, body in rows] + [
            json.loads(event) for (event,) in held
        ]

    key = f"{APP_ID}|http://127.0.0.1:9/hooks"
    occupied = {"name": "channel_occupied", "channel": channel}
    vacated = {"name": "channel_vacated", "channel": channel}
    deadline = time.monotonic() + TIMEOUT
    while queued() != [(key, [occupied]), vacated]:  # the vacancy is held, in the queue too
        assert time.monotonic() < deadline, queued()
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(srv.stop, signal.SIGTERM) == 0, srv.logs()
    assert queued() == [(key, [occupied]), (key, [vacated])]
