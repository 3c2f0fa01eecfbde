"""The signed-HTTP client against two real Pusher-protocol servers: ``tidings serve`` and
Soketi 1.6.1 (the benchmark peer, installed by bench/servers.py into .cache/bench/soketi).

Each test runs against both: real WebSocket subscribers see what the client triggers, and
the servers' refusals come back as PublishError with their status.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    SocketOpener,
    channel_auth,
    unique,
    user_auth,
)

from server_process import ServerProcess, free_port
from tidings.backends import Event, PublishError
from tidings.clients import HttpClient, open_backend

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    name: str
    http_url: str
    ws_url: str

    def client_url(self, secret: str = APP_SECRET) -> str:
        return f"{self.http_url.replace('http://', f'http://{APP_KEY}:{secret}@')}/apps/{APP_ID}"


def _soketi() -> Iterator[Target]:
    """Soketi on a free port, with the bench's settings plus user authentication."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Soketi needs Node and npm")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import servers  # bench/servers.py: installs and configures the benchmark peers
    finally:
        sys.path.remove(str(ROOT / "bench"))
    servers.install_soketi()
    port = free_port()
    env = {**servers.soketi_env(port), "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true"}
    script = servers.SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
    proc = subprocess.Popen(
        ["node", str(script), "start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=servers.SOKETI_DIR,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ready", proc)
        yield Target("soketi", f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3 * TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 4 * TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"soketi exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("soketi did not become ready")


@pytest.fixture(scope="module", params=["tidings", "soketi"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "tidings":
        server: ServerProcess = request.getfixturevalue("server")
        yield Target("tidings", server.http_url, server.ws_url)
    else:
        yield from _soketi()


@pytest.fixture
async def client(target: Target) -> AsyncIterator[HttpClient]:
    backend = open_backend(target.client_url())
    assert isinstance(backend, HttpClient)
    await backend.start()
    yield backend
    await backend.close()


async def test_trigger_and_batch_reach_subscribers(
    target: Target, client: HttpClient, open_socket: SocketOpener
) -> None:
    first, second = unique("orders"), unique("audit")
    sender = await open_socket(target.ws_url)
    reader = await open_socket(target.ws_url)
    for sock in (sender, reader):
        await sock.subscribe(first)
        await sock.subscribe(second)

    await client.trigger(Event((first, second), "created", '{"id":42}'))
    await client.trigger(Event((first,), "mine", '"x"', socket_id=sender.socket_id))
    batch = [Event((second,), "b1", '"1"'), Event((first,), "b2", '"2"')]
    assert await client.trigger_batch(batch) == {}

    expected = [
        ("created", first, '{"id":42}'),
        ("created", second, '{"id":42}'),
        ("mine", first, '"x"'),
        ("b1", second, '"1"'),
        ("b2", first, '"2"'),
    ]
    got = [(m["event"], m["channel"], m["data"]) for m in await reader.recv_n(5)]
    assert got == expected
    sent = [(m["event"], m["channel"], m["data"]) for m in await sender.recv_n(4)]
    assert sent == [e for e in expected if e[0] != "mine"]


async def test_channels_channel_and_users(
    target: Target, client: HttpClient, open_socket: SocketOpener
) -> None:
    public = unique("lobby")
    room = unique("presence-room")
    a = await open_socket(target.ws_url)
    b = await open_socket(target.ws_url)
    await a.subscribe(public)
    await b.subscribe(public)
    await a.subscribe_presence(room, "alice", {"name": "A"})

    # The answers are the server's: Soketi 1.6 ignores info on /channels (it always gives
    # subscription_count and occupied, never user_count), so compare what both give.
    channels = await client.channels("", ["subscription_count"])
    assert channels[public]["subscription_count"] == 2
    presence = await client.channels("presence-", ["user_count"])
    assert public not in presence
    assert room in presence
    if target.name == "tidings":
        assert presence[room] == {"user_count": 1}
    assert (await client.channel(room, ["user_count"]))["user_count"] == 1
    assert await client.channel(public, ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 2,
    }
    assert (await client.channel(unique("empty"), []))["occupied"] is False
    assert await client.users(room) == ["alice"]


async def test_send_to_user_and_terminate_user(
    target: Target, client: HttpClient, open_socket: SocketOpener
) -> None:
    user = unique("user")
    sock = await open_socket(target.ws_url)
    user_data = json.dumps({"id": user})
    auth = user_auth(sock.socket_id, user_data)
    await sock.send_event("pusher:signin", {"auth": auth, "user_data": user_data})
    await sock.expect("pusher:signin_success")  # its data differs: Soketi sends an object
    bystander = await open_socket(target.ws_url)
    channel = unique("private-x")
    await bystander.subscribe(channel, channel_auth(bystander.socket_id, channel))

    await client.send_to_user(user, "notice", '{"n":1}')
    message = await sock.recv()
    assert (message["event"], message["data"]) == ("notice", '{"n":1}'), message

    await client.terminate_user(user)
    closed = await sock.wait_closed()
    assert closed.code == 4009, closed
    await bystander.send_event("pusher:ping", {})
    await bystander.expect("pusher:pong")  # other users keep their connection


async def test_bad_secret_is_401(target: Target) -> None:
    backend = open_backend(target.client_url(secret="not-the-secret"))
    try:
        for call in (
            backend.trigger(Event(("orders",), "e", "{}")),
            backend.channels("", []),
        ):
            with pytest.raises(PublishError) as refused:
                await call
            assert refused.value.status == 401, refused.value.message
            assert "not-the-secret" not in refused.value.message
    finally:
        await backend.close()


async def test_server_refusals_keep_status_and_message(target: Target, client: HttpClient) -> None:
    """Tidings' own limits (Soketi's differ in status and wording, and are not ours)."""
    if target.name != "tidings":
        pytest.skip("Tidings' limits")
    with pytest.raises(PublishError) as too_large:
        await client.trigger(Event(("big",), "e", json.dumps("x" * 20000)))
    assert too_large.value.status == 413
    assert "larger than 10240 bytes" in too_large.value.message
    with pytest.raises(PublishError) as invalid:
        await client.channel("lobby", ["user_count"])
    assert invalid.value.status == 400
    assert "presence" in invalid.value.message


async def test_trigger_info_on_tidings(
    target: Target, client: HttpClient, open_socket: SocketOpener
) -> None:
    if target.name != "tidings":
        pytest.skip("Soketi 1.6 answers a trigger with {} whatever info asks")
    channel = unique("counted")
    sock = await open_socket(target.ws_url)
    await sock.subscribe(channel)
    answer = await client.trigger(Event((channel,), "e", "{}", info=("subscription_count",)))
    assert answer == {"channels": {channel: {"subscription_count": 1}}}
    batch = [Event((channel,), "e", "{}", info=("subscription_count",))]
    assert await client.trigger_batch(batch) == {"batch": [{"subscription_count": 1}]}


def test_runs_on_a_loop_in_another_thread(target: Target) -> None:
    """As Realtime drives it: a private loop thread (the session is created on it), calls
    submitted from this thread."""
    loop = asyncio.new_event_loop()
    worker = threading.Thread(target=loop.run_forever, daemon=True)
    worker.start()
    backend = open_backend(target.client_url())
    channel = unique("threads")

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=3 * TIMEOUT)

    try:
        call(backend.start())
        call(backend.trigger(Event((channel,), "e", "{}")))
        assert call(backend.channel(channel, []))["occupied"] is False
        call(backend.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join(timeout=TIMEOUT)
        loop.close()


async def test_unreachable_server_is_503() -> None:
    backend = open_backend(f"http://{APP_KEY}:{APP_SECRET}@127.0.0.1:{free_port()}/apps/1")
    try:
        with pytest.raises(PublishError) as refused:
            await backend.trigger(Event(("orders",), "e", "{}"))
    finally:
        await backend.close()
    assert refused.value.status == 503
    assert APP_SECRET not in refused.value.message
