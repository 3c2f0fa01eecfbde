"""Slow and greedy HTTP clients against a real `tidings serve` (server/connection_guard.py).

Raw sockets play the attackers: a client trickling its headers or its body, a flood of
connections that never send a request, too many connections from one address, uploads
abandoned halfway. Each test proves the server cuts them (and counts the cut in
/metrics) while real clients, WebSocket and REST, still get through.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import (
    QUERY,
    TIMEOUT,
    SocketOpener,
    eventually,
    raw_http,
    rest_request,
    rest_requests_seen,
    unique,
    ws_app_url,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from server_process import ServerProcess

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

T = TypeVar("T")

DEADLINE = 1.0  # the short header/body/keep-alive timeouts of these servers, in seconds
SHORT_DEADLINES = {
    "request_header_timeout": DEADLINE,
    "request_body_timeout": DEADLINE,
    # aiohttp's keep-alive timer also runs from the accept: longer, so the cuts are ours.
    "keepalive_timeout": 4 * DEADLINE,
    "log_level": "debug",
}
TRICKLE = 0.2  # seconds between two bytes (or lines) of a slow client
UPGRADE = (
    f"GET /app/app-key?{QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def cuts(server: ServerProcess) -> dict[str, float]:
    """``tidings_http_cuts_total`` by reason, and the pending gauge under ``"pending"``."""
    resp = raw_http(server.http_url, "GET", "/metrics")
    assert resp.status == 200, resp
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            if sample.name == "tidings_http_cuts_total":
                found[sample.labels["reason"]] = sample.value
            elif sample.name == "tidings_http_pending_connections":
                found["pending"] = sample.value
    return found


@contextmanager
def raw_connections(server: ServerProcess, n: int) -> Iterator[list[socket.socket]]:
    sockets = []
    try:
        for _ in range(n):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closes ``sock`` within ``wait`` seconds (any data is skipped)."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            return False
        except OSError:  # reset
            return True
    return False


def trickle_until_closed(sock: socket.socket, first: bytes, piece: bytes, limit: float) -> float:
    """Send ``first``, then ``piece`` every TRICKLE seconds until the server closes the
    connection; the seconds that took. Fails if it is still open after ``limit``."""
    started = time.monotonic()
    sock.sendall(first)
    while time.monotonic() - started < limit:
        if closed_by_server(sock, TRICKLE):
            return time.monotonic() - started
        try:
            sock.sendall(piece)
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"the slow client was still connected after {limit} s")


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]


# -- deadlines ------------------------------------------------------------------------------


def test_headers_sent_a_line_at_a_time_are_cut_at_the_deadline(make_server: Any) -> None:
    server = make_server(**SHORT_DEADLINES)
    with raw_connections(server, 1) as [sock]:
        took = trickle_until_closed(
            sock, UPGRADE.encode(), b"X-Slow: 1\r\n", limit=DEADLINE + 2 * TIMEOUT
        )
    assert took >= DEADLINE - TRICKLE, took  # not before its deadline
    assert cuts(server)["header_timeout"] == 1
    debug = [e for e in json_lines(server) if "header_timeout" in e["message"]]
    assert debug and debug[0]["level"] == "debug", debug


def test_headers_sent_a_byte_at_a_time_are_cut_too(make_server: Any) -> None:
    server = make_server(**SHORT_DEADLINES)
    with raw_connections(server, 1) as [sock]:
        # One byte of one header's value at a time (a bad byte would get a 400 at once).
        trickle_until_closed(sock, b"GET / HTTP/1.1\r\nX-Slow: ", b"a", DEADLINE + 2 * TIMEOUT)
    assert cuts(server)["header_timeout"] == 1


def test_a_rest_body_that_trickles_is_cut(make_server: Any) -> None:
    server = make_server(**SHORT_DEADLINES)
    head = (
        "POST /apps/12345/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with raw_connections(server, 1) as [sock]:
        took = trickle_until_closed(sock, head.encode(), b" ", limit=DEADLINE + 2 * TIMEOUT)
    assert took >= DEADLINE - TRICKLE, took
    counted = cuts(server)
    assert (counted["body_timeout"], counted["header_timeout"]) == (1, 0)
    # The cut upload is a debug line, not an error.
    errors = [e for e in json_lines(server) if e["level"] == "error"]
    assert not errors, "\n".join(f"{e['message']}\n{e.get('exception', '')}" for e in errors)


def test_an_idle_keep_alive_connection_is_closed(make_server: Any) -> None:
    server = make_server(**{**SHORT_DEADLINES, "keepalive_timeout": DEADLINE})
    with raw_connections(server, 1) as [sock]:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(TIMEOUT)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "no answer to the first request"
        assert closed_by_server(sock, DEADLINE + 2 * TIMEOUT)


async def test_an_idle_websocket_is_not_cut_by_the_http_deadlines(
    make_server: Any, open_socket: SocketOpener
) -> None:
    """Established sockets answer to the Pusher activity timeout (120 s here), nothing else."""
    server = make_server(**SHORT_DEADLINES)
    sock = await open_socket(server.ws_url)
    await asyncio.sleep(3 * DEADLINE + 2 * TRICKLE)
    await sock.ping()
    counted = cuts(server)
    assert counted["header_timeout"] == counted["body_timeout"] == 0
    assert counted["pending"] == 0


# -- the pending cap -------------------------------------------------------------------------


async def test_past_the_pending_cap_the_oldest_silent_connections_are_closed(
    make_server: Any, open_socket: SocketOpener
) -> None:
    cap, extra = 5, 3
    server = make_server(max_pending_connections=cap)
    with raw_connections(server, cap + extra) as silent:
        oldest, newest = silent[:extra], silent[extra:]
        for sock in oldest:
            assert await asyncio.to_thread(closed_by_server, sock, TIMEOUT)
        # The newest are still waited on: the cap cut the old ones, not these.
        for sock in newest:
            assert not await asyncio.to_thread(closed_by_server, sock, 0.05)
        # Real clients get through while the silent ones keep the cap full.
        ws = await open_socket(server.ws_url)
        channel = unique("cap")
        await ws.subscribe(channel)
        resp = await asyncio.to_thread(
            rest_request,
            server.http_url,
            "POST",
            "/apps/12345/events",
            json_body={"name": "e", "channels": [channel], "data": "{}"},
        )
        assert resp.status == 200, resp
        await ws.expect("e", channel)
    assert cuts(server)["pending_cap"] >= extra


# -- per address -----------------------------------------------------------------------------


class WebSockets:
    """Opens WebSockets, possibly with an X-Forwarded-For header; keeps the accepted ones
    open until :meth:`close_all` (the fixture calls it after the test)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.open: list[ClientConnection] = []

    async def status(self, forwarded_for: str | None) -> int:
        """101 when accepted, else the HTTP status refusing it (0: closed unanswered)."""
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        try:
            ws = await connect(
                ws_app_url(self.server.ws_url),
                additional_headers=headers,
                ping_interval=None,
                open_timeout=TIMEOUT,
            )
        except InvalidStatus as exc:
            if exc.response.status_code == 429:
                body = json.loads(exc.response.body or b"{}")
                assert isinstance(body.get("error"), str), body
            return exc.response.status_code
        except (InvalidHandshake, OSError, EOFError):
            return 0
        self.open.append(ws)
        await ws.recv()  # pusher:connection_established
        return 101

    async def close_one(self) -> None:
        await self.open.pop().close()

    async def close_all(self) -> None:
        while self.open:
            await self.close_one()


@pytest.fixture
async def websockets_to() -> AsyncIterator[Callable[[ServerProcess], WebSockets]]:
    made: list[WebSockets] = []

    def factory(server: ServerProcess) -> WebSockets:
        made.append(WebSockets(server))
        return made[-1]

    yield factory
    for sockets in made:
        await sockets.close_all()


async def test_per_ip_limit_refuses_the_next_connection(
    make_server: Any, websockets_to: Callable[[ServerProcess], WebSockets]
) -> None:
    # 192.0.2.1 is trusted, not the test's 127.0.0.1: its X-Forwarded-For counts for nothing.
    server = make_server(max_connections_per_ip=2, trusted_proxies=["192.0.2.1"])
    sockets = websockets_to(server)
    assert await sockets.status(None) == 101
    assert await sockets.status("198.51.100.1") == 101
    assert await sockets.status("198.51.100.2") == 0  # closed at once
    with raw_connections(server, 1) as [raw]:
        assert await asyncio.to_thread(closed_by_server, raw, TIMEOUT)
    await sockets.close_one()

    async def admitted_again() -> bool:
        return await sockets.status(None) == 101

    await eventually(admitted_again)  # one closed: room for one more
    await sockets.close_all()
    counted = await eventually_admitted(lambda: cuts(server))
    assert counted["per_ip"] >= 2


async def eventually_admitted(call: Callable[[], T]) -> T:
    """``call()`` (a blocking HTTP request) once the server admits it again: the connections
    just closed on the client side may still count on the server for a moment."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return await asyncio.to_thread(call)
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_behind_a_trusted_proxy_each_forwarded_client_is_counted(
    make_server: Any, websockets_to: Callable[[ServerProcess], WebSockets]
) -> None:
    server = make_server(max_connections_per_ip=2, trusted_proxies=["127.0.0.0/8"])
    sockets = websockets_to(server)
    assert await sockets.status("198.51.100.1") == 101
    assert await sockets.status("203.0.113.9, 198.51.100.1") == 101  # a forged left part
    assert await sockets.status("198.51.100.1") == 429
    assert await sockets.status("198.51.100.2") == 101
    assert await sockets.status("198.51.100.2") == 101
    # REST calls through the proxy are counted under their clients too.
    for client, status in (("198.51.100.1", 429), ("198.51.100.3", 200)):
        resp = raw_http(server.http_url, "GET", "/", headers={"X-Forwarded-For": client})
        assert resp.status == status, (client, resp)
    assert cuts(server)["per_ip"] == 2


# -- aborted uploads -------------------------------------------------------------------------


async def test_aborted_uploads_are_not_logged_as_errors(make_server: Any) -> None:
    server = make_server()
    clients = 50
    head = (
        "POST /apps/12345/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
    )

    def upload_half() -> None:
        with raw_connections(server, 1) as [sock]:
            sock.sendall(head.encode() + b" " * 1000)

    await asyncio.gather(*(asyncio.to_thread(upload_half) for _ in range(clients)))

    async def all_finished() -> bool:
        seen = await asyncio.to_thread(rest_requests_seen, server.http_url, "/apps/{app_id}/events")
        return sum(seen.values()) == clients

    await eventually(all_finished, timeout=4 * TIMEOUT)
    logs = server.logs()
    assert "Traceback" not in logs, logs[-2000:]
    assert not [e for e in json_lines(server) if e["level"] == "error"]
    # Timed as "client closed request", not as a server error.
    assert rest_requests_seen(server.http_url, "/apps/{app_id}/events") == {"499": clients}
