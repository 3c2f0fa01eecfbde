"""Tidings' ASGI app under real servers: uvicorn (and hypercorn), real WebSocket clients.

Each test runs one app of ``asgi_apps/apps.py`` in a child process on a free port: Tidings
alone, wrapping FastAPI, mounted in Starlette, wrapping Django. Publications are made
through the served node (the apps' ``POST /test/publish``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    eventually,
    rest_request,
    unique,
)
from test_limits import upgrade
from test_slow_consumer import _read_frame, _slow_subscriber

APPS_DIR = str(Path(__file__).resolve().parent / "asgi_apps")
if APPS_DIR not in sys.path:
    sys.path.insert(0, APPS_DIR)

from asgi_server import AsgiServer  # noqa: E402

# A clean exit after SIGTERM: uvicorn re-raises the signal once it has shut down.
STOPPED = (0, -signal.SIGTERM)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``serve(app, server="uvicorn", args=(), env={})`` → a started AsgiServer,
    stopped after the test."""
    started: list[AsgiServer] = []

    def factory(app: str, **options: Any) -> AsgiServer:
        server = AsgiServer(app, tmp_path, **options)
        started.append(server)
        server.start()
        return server

    yield factory
    for server in started:
        server.stop()


async def publish(server: AsgiServer, channel: str, count: int, **options: Any) -> None:
    await asyncio.to_thread(server.publish, channel, count, **options)


async def ticks(sock: PusherSocket, n: int) -> list[int]:
    """The numbers of the next ``n`` tick events."""
    found = []
    while len(found) < n:
        message = await sock.recv()
        assert message["event"] == "tick", message
        found.append(json.loads(message["data"])[0])
    return found


async def test_a_publication_reaches_every_subscriber_once_and_in_order(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("plain")
    channel = unique("asgi")
    sockets = [await open_socket(server.ws_url) for _ in range(3)]
    for sock in sockets:
        assert sock.socket_id
        await sock.subscribe(channel)
    # One request: 40 publications in one loop tick, written as one coalesced frame that
    # each socket must receive as 40 messages; then one more, alone.
    await publish(server, channel, 40)
    await publish(server, channel, 1, start=40)
    for sock in sockets:
        assert await ticks(sock, 41) == list(range(41))
        await sock.ping()  # replies still come after publications


@pytest.mark.parametrize(("app", "prefix"), [("plain", ""), ("fastapi", ""), ("mounted", "/rt")])
async def test_the_rest_api_is_served_beside_the_sockets(
    serve: Any, open_socket: SocketOpener, app: str, prefix: str
) -> None:
    server = serve(app)
    sock = await open_socket(server.ws_url, path=f"{prefix}/app/app-key?protocol=7")
    channel = unique("rest")
    await sock.subscribe(channel)
    body = {"name": "tick", "channels": [channel], "data": json.dumps([7, ""])}
    resp = await asyncio.to_thread(
        rest_request, server.http_url, "POST", f"{prefix}/apps/12345/events", json_body=body
    )
    assert resp.status == 200, resp
    assert await ticks(sock, 1) == [7]
    resp = await asyncio.to_thread(
        rest_request, server.http_url, "GET", f"{prefix}/apps/12345/channels"
    )
    assert resp.status == 200, resp
    assert channel in resp.json()["channels"]
    # A bad signature is the REST API's 401, not the wrapped app's 404.
    resp = await asyncio.to_thread(
        rest_request, server.http_url, "GET", f"{prefix}/apps/12345/channels", signature="0"
    )
    assert resp.status == 401, resp


async def test_tidings_alone_answers_404_json_for_other_paths(serve: Any) -> None:
    server = serve("plain")
    status, body = await asyncio.to_thread(server.request, "GET", "/elsewhere")
    assert status == 404
    assert body == {"error": "Not found"}


async def test_admission_errors_are_sent_then_the_socket_is_closed_with_the_code(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("plain")
    for path, code in [
        ("/app/no-such-key?protocol=7", 4001),
        ("/app/app-key?protocol=99", 4007),
        ("/app/app-key?protocol=seven", 4006),
        ("/app/app-key/extra?protocol=7", 4005),
    ]:
        sock = await open_socket(server.ws_url, path=path, handshake=False)
        closed = await sock.wait_closed()
        assert closed.code == code, (path, closed)
        assert [m["event"] for m in closed.messages] == ["pusher:error"], closed
        assert closed.messages[0]["data"]["code"] == code, closed


async def test_over_max_connection_rate_new_sockets_are_answered_503(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("plain", env={"TIDINGS_TEST_MAX_CONNECTION_RATE": "5"})
    target = "/app/app-key?protocol=7&client=js&version=8.6.0"
    answers = await asyncio.gather(*(upgrade(server.port, target) for _ in range(15)))
    statuses = sorted(status for status, _, _ in answers)
    # At most one second of burst (5) passes; the rest is refused before the upgrade.
    assert 1 <= statuses.count(101) <= 6 and statuses.count(503) >= 9, statuses
    for status, headers, body in answers:
        if status == 503:
            assert headers["retry-after"] == "1", headers
            assert isinstance(json.loads(body)["error"], str), body


async def test_binary_frames_are_an_error_and_oversized_messages_close_1009(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("plain")
    sock = await open_socket(server.ws_url)
    await sock.send_raw(b"\x00binary")
    error = await sock.expect("pusher:error")
    assert "binary" in json.dumps(error)
    await sock.ping()  # still open
    await sock.send_raw(json.dumps({"event": "pusher:ping", "data": "x" * 40_000}))
    closed = await sock.wait_closed()
    assert closed.code == 1009, closed
    # The limit (32768) is in bytes: 20,000 characters of two bytes each are over it.
    sock = await open_socket(server.ws_url)
    await sock.send_raw(
        json.dumps({"event": "pusher:ping", "data": "é" * 20_000}, ensure_ascii=False)
    )
    closed = await sock.wait_closed()
    assert closed.code == 1009, closed


async def test_a_client_that_stops_reading_is_closed_4100_and_the_others_get_everything(
    serve: Any, open_socket: SocketOpener
) -> None:
    events, batch, pad = 800, 10, 9900
    server = serve("plain", env={"TIDINGS_TEST_MAX_WRITE_BUFFER": "65536"})
    channel = unique("flood")
    good = await open_socket(server.ws_url)
    await good.subscribe(channel)
    slow = await asyncio.to_thread(_slow_subscriber, server.port, channel)
    try:

        async def flood() -> None:
            for start in range(0, events, batch):
                await publish(server, channel, batch, start=start, size=pad)

        publisher = asyncio.create_task(flood())
        received = []
        while len(received) < events:
            message = await good.recv(timeout=6 * TIMEOUT)
            assert message["event"] == "tick", message
            received.append(json.loads(message["data"])[0])
        await publisher
        assert received == list(range(events))
        assert "closed slow consumer" in server.logs()

        def read_until_close() -> int | None:
            buffer = bytearray()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            while True:
                opcode, payload = _read_frame(slow, buffer)
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

        # What was queued before the overflow, then 4100, once the client reads again.
        assert await asyncio.to_thread(read_until_close) == 4100
    finally:
        slow.close()


async def test_fastapi_wrapped_keeps_its_routes_and_its_lifespan(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("fastapi", args=("--lifespan", "on"))
    assert server.events() == ["tidings started", "app startup"]
    sock = await open_socket(server.ws_url)
    status, body = await asyncio.to_thread(server.request, "GET", "/hello")
    assert (status, body) == (200, {"hello": "fastapi", "connections": 1})
    channel = unique("fastapi")
    await sock.subscribe(channel)
    await publish(server, channel, 3)
    assert await ticks(sock, 3) == [0, 1, 2]
    # A socket still open at SIGTERM: Tidings drains it (4200) before uvicorn shuts down
    # (test_asgi_shutdown.py).
    assert server.stop() in STOPPED, server.logs()
    assert (await sock.wait_closed()).code == 4200
    assert server.events() == ["tidings started", "app startup", "app shutdown", "tidings stopped"]


@pytest.mark.parametrize("app", ["plain", "fastapi"])
async def test_a_failed_start_fails_the_lifespan_startup(
    serve: Any, tmp_path: Path, app: str
) -> None:
    server = AsgiServer(
        app, tmp_path, args=("--lifespan", "on"), env={"TIDINGS_TEST_BROKEN_START": "1"}
    )
    with pytest.raises(RuntimeError, match="exited early"):
        await asyncio.to_thread(server.start)
    assert server.proc is not None and server.proc.returncode != 0
    logs = server.logs()
    assert "Tidings failed to start" in logs and "the broker is unreachable" in logs, logs
    assert "Application startup failed" in logs, logs


async def test_mounted_under_a_path_in_starlette(serve: Any, open_socket: SocketOpener) -> None:
    server = serve("mounted")
    sock = await open_socket(server.ws_url, path="/rt/app/app-key?protocol=7")
    channel = unique("mounted")
    await sock.subscribe(channel)
    await publish(server, channel, 2)
    assert await ticks(sock, 2) == [0, 1]
    # Starlette started no lifespan for the mount: Tidings started on the first scope.
    assert server.events() == ["tidings started"]
    status, body = await asyncio.to_thread(server.request, "GET", "/rt/elsewhere")
    assert (status, body) == (404, {"error": "Not found"})
    status, body = await asyncio.to_thread(server.request, "GET", "/hello")
    assert (status, body) == (200, {"hello": "starlette"})


async def test_mounted_with_the_path_cut_off_as_starlette_did_before_0_33(
    serve: Any, open_socket: SocketOpener
) -> None:
    server = serve("legacy_mount")
    sock = await open_socket(server.ws_url, path="/rt/app/app-key?protocol=7")
    channel = unique("legacy")
    await sock.subscribe(channel)
    await publish(server, channel, 2)
    assert await ticks(sock, 2) == [0, 1]


async def test_under_hypercorn(serve: Any, open_socket: SocketOpener) -> None:
    server = serve("plain", server="hypercorn")
    assert server.events() == ["tidings started"]
    sockets = [await open_socket(server.ws_url) for _ in range(2)]
    channel = unique("hypercorn")
    for sock in sockets:
        await sock.subscribe(channel)
    await publish(server, channel, 20)
    for sock in sockets:
        assert await ticks(sock, 20) == list(range(20))
        await sock.close()
    assert server.stop() in STOPPED, server.logs()
    assert server.events() == ["tidings started", "tidings stopped"]


@pytest.mark.parametrize("lifespan", ["off", "auto"])
async def test_django_wrapped(serve: Any, open_socket: SocketOpener, lifespan: str) -> None:
    """Django does no lifespan: with none (``off``), Tidings starts on the first scope (the
    readiness probe, a 404 from Django) and nothing stops it; when the server offers one
    (``auto``), Django refuses it and Tidings takes it alone, start and stop."""
    server = serve("django", args=("--lifespan", lifespan))
    assert server.events() == ["tidings started"]
    sock = await open_socket(server.ws_url)
    status, body = await asyncio.to_thread(server.request, "GET", "/django/hello")
    assert (status, body) == (200, {"hello": "django", "connections": 1})
    channel = unique("django")
    await sock.subscribe(channel)
    await publish(server, channel, 3)  # a Django view, publishing through the node
    assert await ticks(sock, 3) == [0, 1, 2]
    await sock.close()
    assert server.stop() in STOPPED, server.logs()
    stopped = ["tidings stopped"] if lifespan == "auto" else []
    assert server.events() == ["tidings started", *stopped]


@pytest.mark.parametrize(
    ("kind", "args", "env"),
    [
        ("uvicorn", ("--lifespan", "on", "--workers", "2"), {}),  # seen on the supervisor
        ("hypercorn", (), {"WEB_CONCURRENCY": "2"}),  # what a platform sets for its workers
    ],
)
async def test_several_workers_in_memory_mode_are_refused(
    tmp_path: Path, kind: str, args: tuple[str, ...], env: dict[str, str]
) -> None:
    server = AsgiServer("plain", tmp_path, server=kind, args=args, env=env)
    server.spawn()
    try:

        async def refused() -> bool:
            return "2 worker processes need a shared broker" in server.logs()

        await eventually(refused, timeout=4 * TIMEOUT)
        assert server.events() == []  # Tidings never started
    finally:
        server.stop()
