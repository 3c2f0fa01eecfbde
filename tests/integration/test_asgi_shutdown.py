"""SIGTERM to a real uvicorn or hypercorn serving ``rt.asgi(...)``: Tidings drains first.

Every WebSocket gets 4200 (reconnect, elsewhere) and every ``xhr_streaming`` session its
4200 close frame and the end of its response, before the server's own shutdown (which
would close sockets with 1012, or wait for the streams forever); then the server exits and
the lifespan shutdown of the wrapped app runs (in each worker of ``uvicorn --workers``).
Hypercorn runs with ``--workers 0``: with its default worker process the signal reaches
only the supervisor (see ``tidings/asgi/shutdown.py``). ``asgi_apps/apps.py`` records the
lifecycle.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fallback_helpers import FallbackSession, Stream
from pusher_helpers import TIMEOUT, PusherSocket, SocketOpener, eventually, unique

from redis_server import RedisServer

APPS_DIR = str(Path(__file__).resolve().parent / "asgi_apps")
if APPS_DIR not in sys.path:
    sys.path.insert(0, APPS_DIR)

from asgi_server import AsgiServer  # noqa: E402

# A clean exit after SIGTERM: uvicorn re-raises the signal once it has shut down.
STOPPED = (0, -signal.SIGTERM)
RECONNECT = 4200

# Hypercorn in the process that receives the signal (see the module docstring).
SERVER_ARGS = {"uvicorn": (), "hypercorn": ("--workers", "0")}

LIFECYCLE = ["tidings started", "app startup", "app shutdown", "tidings stopped"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``serve(app, server=..., args=(), env={})`` → a started AsgiServer, killed
    after the test if it is still running."""
    started: list[AsgiServer] = []

    def factory(app: str, **options: Any) -> AsgiServer:
        server = AsgiServer(app, tmp_path, **options)
        started.append(server)
        server.start()
        return server

    yield factory
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=TIMEOUT)


async def exit_code(server: AsgiServer, sig: int | None = signal.SIGTERM) -> int:
    """Send ``sig`` (if any) and wait for the process to end; fail if it does not."""
    assert server.proc is not None
    if sig is not None:
        server.proc.send_signal(sig)
    try:
        return await asyncio.to_thread(server.proc.wait, 3 * TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{server.server} did not exit:\n{server.logs()}") from None


async def close_frame(stream: Stream) -> Any:
    """The stream's next frame that is not a heartbeat."""
    while True:
        kind, payload = await stream.frame()
        if kind != "h":
            return kind, payload


async def draining(server: AsgiServer) -> bool:
    status, body = await asyncio.to_thread(server.request, "GET", "/test/draining")
    assert status == 200, (status, body)
    return bool(body["draining"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("server_name", ["uvicorn", "hypercorn"])
async def test_a_stop_signal_tells_every_socket_and_stream_to_reconnect_then_the_server_exits(
    serve: Any, open_socket: SocketOpener, server_name: str, sig: signal.Signals
) -> None:
    server = serve("fastapi", server=server_name, args=SERVER_ARGS[server_name])
    sockets = [await open_socket(server.ws_url) for _ in range(3)]
    channel = unique("shutdown")
    for sock in sockets:
        await sock.subscribe(channel)
    async with aiohttp.ClientSession() as http:
        session = FallbackSession(http, server.http_url)
        async with session.stream() as stream:
            await session.open_stream(stream)
            assert server.proc is not None
            server.proc.send_signal(sig)
            assert await close_frame(stream) == ("c", [RECONNECT, "Server shutting down"])
            assert await stream.ended()
        for sock in sockets:
            closed = await sock.wait_closed()
            assert (closed.code, closed.reason) == (RECONNECT, "Server shutting down")
    assert await exit_code(server, None) in (0, -sig), server.logs()
    assert server.events() == LIFECYCLE


async def test_sockets_keep_working_through_the_ready_delay_and_a_second_signal_does_not_wait(
    serve: Any, open_socket: SocketOpener
) -> None:
    """The drain starts with ``shutdown_ready_delay`` (long here), during which everything
    keeps working; a second SIGTERM cuts the delay short and hands the shutdown to uvicorn
    at once: the socket is closed by the drain (4200) or by uvicorn (1012), whichever
    comes first, and the process exits."""
    server = serve("fastapi", env={"TIDINGS_TEST_SHUTDOWN_READY_DELAY": str(30 * TIMEOUT)})
    sock = await open_socket(server.ws_url)
    channel = unique("delay")
    await sock.subscribe(channel)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: draining(server))
    await asyncio.to_thread(server.publish, channel, 1)
    message = await sock.expect("tick", channel)
    assert json.loads(message["data"]) == [0, ""]
    assert await exit_code(server, signal.SIGTERM) in STOPPED, server.logs()
    assert (await sock.wait_closed()).code in (RECONNECT, 1012)
    assert server.events() == LIFECYCLE


async def test_with_handle_signals_off_the_server_alone_handles_sigterm(
    serve: Any, open_socket: SocketOpener
) -> None:
    """``rt.asgi(app, handle_signals=False)``: uvicorn closes the sockets itself (1012)
    before the lifespan shutdown, which then stops the app and Tidings."""
    server = serve("fastapi_signals_off")
    sock = await open_socket(server.ws_url)
    assert await exit_code(server) in STOPPED, server.logs()
    assert (await sock.wait_closed()).code == 1012
    assert server.events() == LIFECYCLE


async def test_without_lifespan_the_drain_still_comes_first(
    serve: Any, open_socket: SocketOpener
) -> None:
    """Django under ``--lifespan off``: Tidings started on the first scope, and SIGTERM
    still drains it before uvicorn shuts down (nothing stops the node after)."""
    server = serve("django", args=("--lifespan", "off"))
    sockets: list[PusherSocket] = [await open_socket(server.ws_url) for _ in range(2)]
    assert await exit_code(server) in STOPPED, server.logs()
    for sock in sockets:
        assert (await sock.wait_closed()).code == RECONNECT
    assert server.events() == ["tidings started"]


async def test_each_uvicorn_worker_drains_its_own_sockets(
    serve: Any, open_socket: SocketOpener, redis_server: RedisServer, redis_prefix: str
) -> None:
    """``uvicorn --workers 2`` (Redis between them): the supervisor passes SIGTERM on to each
    worker, and each drains before it shuts down."""
    env = {"TIDINGS_TEST_BROKER": redis_server.url, "TIDINGS_TEST_REDIS_PREFIX": redis_prefix}
    server = serve("fastapi", args=("--workers", "2"), env=env)
    sockets = [await open_socket(server.ws_url) for _ in range(6)]
    await eventually(lambda: both_started(server))
    assert await exit_code(server) in STOPPED, server.logs()
    for sock in sockets:
        assert (await sock.wait_closed()).code == RECONNECT
    assert sorted(server.events()) == sorted(LIFECYCLE * 2)


async def both_started(server: AsgiServer) -> bool:
    return server.events().count("app startup") == 2
