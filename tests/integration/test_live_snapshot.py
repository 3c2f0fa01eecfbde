"""The snapshot of a ``private-live.`` channel closes the gap: real servers, real clients.

Embedded: a Realtime whose node has a test snapshot provider that waits for an Event the
test sets, so the test decides what is published while the snapshot is fetched.
Standalone: a real ``tidings serve`` whose app's ``live_snapshot_url`` is a small aiohttp
app in the test that checks the signature and answers as each test asks.
Also ``Backend.occupied`` (memory, Redis embedded, RedisClient, HttpClient) and
``GET /tidings.js`` under ``tidings serve``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from embedded_node import embedded_realtime, serving
from fallback_helpers import FallbackSession
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUIET,
    TIMEOUT,
    PusherSocket,
    channel_auth,
    raw_connect,
    scrape,
    unique,
    value,
    ws_app_url,
)

from server_process import ServerProcess
from tidings import Realtime
from tidings.backends import Event, PublishError
from tidings.clients import RedisClient
from tidings.clients.http import HttpClient
from tidings.core.apps import App

# The standalone app's secret: unlike the dev app's, no startup warning prints it, so the
# server log can be checked for it.
LIVE_SECRET = "live-secret-0f3c9a"
SNAPSHOT = {"rows": [{"id": 1, "title": "one", "version": 4}], "version": 4}


class Provider:
    """``node.live_snapshots`` for the tests: answers ``body`` once ``go`` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.go.set()
        self.asked = asyncio.Queue[tuple[str, str]]()
        self.body = json.dumps(SNAPSHOT).encode()
        self.error: Exception | None = None

    async def __call__(self, app: App, channel: str, socket_id: str) -> bytes:
        self.asked.put_nowait((channel, socket_id))
        await self.go.wait()
        if self.error is not None:
            raise self.error
        return self.body

    async def wait_asked(self) -> tuple[str, str]:
        async with asyncio.timeout(TIMEOUT):
            return await self.asked.get()


def live_channel() -> str:
    return f"private-live.todo.list_id.{unique('l')}"


@asynccontextmanager
async def live_server(**settings: Any) -> AsyncIterator[tuple[Realtime, Provider, str]]:
    rt = embedded_realtime(**settings)
    provider = Provider()
    async with serving(rt) as ws_url:
        rt.node.live_snapshots = provider
        yield rt, provider, ws_url


@asynccontextmanager
async def socket(ws_url: str) -> AsyncIterator[PusherSocket]:
    async with await raw_connect(ws_app_url(ws_url)) as ws:
        client = PusherSocket(ws)
        await client.handshake()
        yield client


async def subscribe(client: PusherSocket, channel: str, secret: str = APP_SECRET) -> None:
    auth = channel_auth(client.socket_id, channel, secret=secret)
    await client.send_event("pusher:subscribe", {"channel": channel, "auth": auth})
    await client.expect("pusher_internal:subscription_succeeded", channel)


async def subscribed_with_snapshot(client: PusherSocket, channel: str) -> dict[str, Any]:
    await subscribe(client, channel)
    message = await client.expect("tidings:snapshot", channel)
    data: dict[str, Any] = json.loads(message["data"])
    return data


async def updates(client: PusherSocket, n: int) -> list[int]:
    messages = await client.recv_n(n)
    assert [m["event"] for m in messages] == ["updated"] * n, messages
    return [json.loads(m["data"])["n"] for m in messages]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


# -- embedded --------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_events_during_the_fetch_arrive_after_the_snapshot_once_in_order(
    broker: str, redis_server: Any, redis_prefix: str
) -> None:
    settings: dict[str, Any] = {}
    if broker == "redis":
        settings = {"redis": redis_server.url, "redis_prefix": redis_prefix}
    async with live_server(**settings) as (rt, provider, ws_url):
        channel = live_channel()
        async with socket(ws_url) as watcher, socket(ws_url) as client:
            assert await subscribed_with_snapshot(watcher, channel) == SNAPSHOT
            await provider.wait_asked()
            provider.go.clear()
            await subscribe(client, channel)
            assert await provider.wait_asked() == (channel, client.socket_id)
            for n in range(20):
                await rt.atrigger(channel, "updated", {"n": n})
            # The watcher has them all: they were published, and held for the client only.
            assert await updates(watcher, 20) == list(range(20))
            await client.assert_silent(QUIET)
            provider.go.set()
            snapshot = await client.expect("tidings:snapshot", channel)
            assert json.loads(snapshot["data"]) == SNAPSHOT
            assert await updates(client, 20) == list(range(20))
            await rt.atrigger(channel, "updated", {"n": 20})
            assert await updates(client, 1) == [20]
            await client.assert_silent(QUIET)


async def test_a_slow_snapshot_does_not_delay_other_subscribers() -> None:
    async with live_server() as (rt, provider, ws_url):
        channel = live_channel()
        async with socket(ws_url) as watcher, socket(ws_url) as slow:
            await subscribed_with_snapshot(watcher, channel)
            await provider.wait_asked()
            provider.go.clear()
            await subscribe(slow, channel)
            await provider.wait_asked()
            started = asyncio.get_running_loop().time()
            await rt.atrigger(channel, "updated", {"n": 1})
            assert await updates(watcher, 1) == [1]
            assert asyncio.get_running_loop().time() - started < TIMEOUT / 5
            # The slow socket's own connection still answers while its snapshot waits.
            await slow.send_event("pusher:ping", {})
            assert (await slow.expect("pusher:pong"))["event"] == "pusher:pong"
            provider.go.set()
            await slow.expect("tidings:snapshot", channel)
            assert await updates(slow, 1) == [1]


@pytest.mark.parametrize("failure", ["raises", "garbage", "timeout"])
async def test_a_failed_snapshot_is_a_subscription_error_and_delivers_nothing(
    failure: str,
) -> None:
    async with live_server(live_snapshot_timeout=0.5) as (rt, provider, ws_url):
        channel = live_channel()
        provider.go.clear()
        if failure == "raises":
            from tidings.core.live_hold import SnapshotFailed

            provider.error = SnapshotFailed("the list is archived")
        elif failure == "garbage":
            provider.body = b'{"rows": "nope"}'
        async with socket(ws_url) as client:
            await subscribe(client, channel)
            await provider.wait_asked()
            await rt.atrigger(channel, "updated", {"n": 1})
            if failure != "timeout":
                provider.go.set()
            error = await client.expect("pusher:subscription_error", channel)
            assert error["data"]["type"] == "SnapshotFailed"
            assert error["data"]["status"] == 500
            reason = {
                "raises": "the list is archived",
                "garbage": '"rows"',
                "timeout": "no snapshot within 0.5 s",
            }[failure]
            assert reason in error["data"]["error"]
            await rt.atrigger(channel, "updated", {"n": 2})
            await client.assert_silent(QUIET)
            assert await occupied_of(rt, [channel]) == set()
            # The client may subscribe again: this time the snapshot comes.
            provider.error, provider.body = None, json.dumps(SNAPSHOT).encode()
            provider.go.set()
            assert await subscribed_with_snapshot(client, channel) == SNAPSHOT


async def test_disconnecting_mid_fetch_leaves_nothing_behind() -> None:
    async with live_server() as (rt, provider, ws_url):
        channel = live_channel()
        provider.go.clear()
        async with socket(ws_url) as client:
            await subscribe(client, channel)
            await provider.wait_asked()
            assert await occupied_of(rt, [channel]) == {channel}
        state = rt.node._states[APP_ID]
        await until(lambda: not rt.node.live_subscriptions and not state.hub.count(channel))
        assert await occupied_of(rt, [channel]) == set()
        provider.go.set()
        await rt.atrigger(channel, "updated", {"n": 1})
        await asyncio.sleep(QUIET)
        assert not rt.node.live_subscriptions and not state.hub.count(channel)


async def test_hold_overflow_fails_the_subscription_and_frees_the_hold() -> None:
    async with live_server(live_hold_max_messages=5) as (rt, provider, ws_url):
        channel = live_channel()
        provider.go.clear()
        async with socket(ws_url) as client:
            await subscribe(client, channel)
            await provider.wait_asked()
            for n in range(6):
                await rt.atrigger(channel, "updated", {"n": n})
            error = await client.expect("pusher:subscription_error", channel)
            assert error["data"]["type"] == "SnapshotFailed"
            assert "more than 5 events" in error["data"]["error"]
            assert not rt.node.live_subscriptions
            provider.go.set()
            await client.assert_silent(QUIET)


async def test_over_the_http_fallback_too() -> None:
    async with live_server() as (rt, provider, ws_url):
        channel = live_channel()
        http_url = ws_url.replace("ws://", "http://")
        provider.go.clear()
        async with aiohttp.ClientSession() as http:
            session = FallbackSession(http, http_url)
            async with session.stream() as stream:
                await session.open_stream(stream)
                await session.subscribe(channel, channel_auth(session.socket_id, channel))
                [succeeded] = await stream.messages()
                assert succeeded["event"] == "pusher_internal:subscription_succeeded"
                await provider.wait_asked()
                for n in range(3):
                    await rt.atrigger(channel, "updated", {"n": n})
                provider.go.set()
                got: list[dict[str, Any]] = []
                async with asyncio.timeout(TIMEOUT):
                    while len(got) < 4:
                        got.extend(
                            m
                            for m in await stream.messages()
                            if m["event"] != "pusher_internal:subscription_count"
                        )
                assert [m["event"] for m in got] == ["tidings:snapshot"] + ["updated"] * 3
                assert json.loads(got[0]["data"]) == SNAPSHOT
                assert [json.loads(m["data"])["n"] for m in got[1:]] == [0, 1, 2]


# -- occupied --------------------------------------------------------------------------------


async def occupied_of(rt: Realtime, channels: list[str]) -> set[str]:
    backend = await rt._home.backend()
    return await backend.occupied(channels)


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_occupied_embedded(broker: str, redis_server: Any, redis_prefix: str) -> None:
    settings: dict[str, Any] = {}
    if broker == "redis":
        settings = {"redis": redis_server.url, "redis_prefix": redis_prefix}
    rt = embedded_realtime(**settings)
    async with serving(rt) as ws_url:
        busy, idle = live_channel(), live_channel()
        async with socket(ws_url) as client:
            await subscribe(client, busy)
            assert await occupied_of(rt, [busy, idle, busy]) == {busy}
            assert await occupied_of(rt, []) == set()
        await until(lambda: not rt.node._states[APP_ID].hub.count(busy))
        async with asyncio.timeout(TIMEOUT):
            while await occupied_of(rt, [busy, idle]):
                await asyncio.sleep(0.01)


async def test_occupied_redis_client_and_http_client(
    make_server: Callable[..., ServerProcess], redis_server: Any, redis_prefix: str
) -> None:
    server = make_server(redis=redis_server.url, redis_prefix=redis_prefix)
    busy, idle = live_channel(), live_channel()
    redis_client = RedisClient(redis_server.url, APP_ID, redis_prefix=redis_prefix)
    http_client = HttpClient(server.http_url, APP_ID, APP_KEY, APP_SECRET)
    try:
        async with socket(server.ws_url) as client:
            await subscribe(client, busy)
            assert await redis_client.occupied([busy, idle]) == {busy}
            # The HTTP API would cost a request per channel: every channel is answered.
            assert await http_client.occupied([busy, idle]) == {busy, idle}
    finally:
        await redis_client.close()
        await http_client.close()
    unreachable = RedisClient("redis://127.0.0.1:1/0", APP_ID)
    try:
        with pytest.raises(PublishError) as refused:
            await unreachable.occupied([busy])
        assert refused.value.status == 503
    finally:
        await unreachable.close()


# -- standalone: tidings serve and the app's signed snapshot endpoint ------------------------


class SnapshotApp:
    """The app's ``POST /pusher/live-snapshot``, answering as ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.secret = LIVE_SECRET
        self.requests: list[dict[str, Any]] = []
        self.go = asyncio.Event()
        self.go.set()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        expected = hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        given = request.headers.get("X-Pusher-Signature", "")
        if request.headers.get("X-Pusher-Key") != APP_KEY or not hmac.compare_digest(
            given, expected
        ):
            return web.json_response({"error": "bad signature"}, status=401)
        self.requests.append(json.loads(raw))
        await self.go.wait()
        if self.mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "garbage":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if self.mode == "oversize":
            return web.json_response({"rows": [{"id": 1, "pad": "x" * 4096}], "version": 1})
        return web.json_response(SNAPSHOT)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SnapshotApp]:
        application = web.Application()
        application.router.add_post("/pusher/live-snapshot", self.handle)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/pusher/live-snapshot"
        try:
            yield self
        finally:
            self.go.set()
            await runner.cleanup()


@pytest.fixture
async def snapshot_app() -> AsyncIterator[SnapshotApp]:
    async with SnapshotApp().running() as app:
        yield app


@pytest.fixture
async def standalone(
    snapshot_app: SnapshotApp, make_server: Callable[..., ServerProcess]
) -> ServerProcess:
    app = {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": LIVE_SECRET,
        "live_snapshot_url": snapshot_app.url,
        "live_snapshot_timeout": 1.0,
        "live_snapshot_max_bytes": 2048,
    }
    return await asyncio.to_thread(make_server, apps=[app])


async def test_standalone_snapshot_from_the_signed_endpoint(
    standalone: ServerProcess, snapshot_app: SnapshotApp
) -> None:
    channel = live_channel()
    publisher = HttpClient(standalone.http_url, APP_ID, APP_KEY, LIVE_SECRET)
    snapshot_app.go.clear()
    try:
        async with socket(standalone.ws_url) as client:
            await subscribe(client, channel, LIVE_SECRET)
            await until(lambda: bool(snapshot_app.requests))
            assert snapshot_app.requests == [{"channel": channel, "socket_id": client.socket_id}]
            for n in range(3):
                await publisher.trigger(Event((channel,), "updated", json.dumps({"n": n})))
            await client.assert_silent(QUIET)
            snapshot_app.go.set()
            snapshot = await client.expect("tidings:snapshot", channel)
            assert json.loads(snapshot["data"]) == SNAPSHOT
            assert await updates(client, 3) == [0, 1, 2]
    finally:
        await publisher.close()
    _, found = scrape(standalone.http_url)
    assert value(found, "tidings_live_snapshots_total", app=APP_ID, result="ok") == 1
    assert value(found, "tidings_live_held_events_released_total", app=APP_ID) == 3
    assert value(found, "tidings_live_snapshots_waiting", app=APP_ID) == 0


FAILURES = [
    ("bad-signature", "answered 401", "refused"),
    ("500", "answered 500", "refused"),
    ("garbage", "not valid JSON", "invalid"),
    ("oversize", "larger than 2048 bytes", "refused"),
    ("timeout", "no snapshot within 1 s", "timeout"),
]


async def test_standalone_failures_are_snapshot_failed(
    standalone: ServerProcess, snapshot_app: SnapshotApp
) -> None:
    # One server for every failure (each spawn costs seconds); a fresh channel each.
    for mode, reason, _ in FAILURES:
        channel = live_channel()
        snapshot_app.mode = mode
        # bad-signature: the app checks with a secret Tidings does not have.
        snapshot_app.secret = "another-secret" if mode == "bad-signature" else LIVE_SECRET
        if mode == "timeout":
            snapshot_app.go.clear()
        async with socket(standalone.ws_url) as client:
            await subscribe(client, channel, LIVE_SECRET)
            error = await client.expect("pusher:subscription_error", channel)
            assert error["data"]["type"] == "SnapshotFailed", (mode, error)
            assert error["data"]["status"] == 500, (mode, error)
            assert reason in error["data"]["error"], (mode, error)
            assert "127.0.0.1" not in error["data"]["error"]
            await client.assert_silent(QUIET)
        snapshot_app.go.set()
        logs = standalone.logs()
        assert f"snapshot of {channel}" in logs, mode
    assert LIVE_SECRET not in standalone.logs()
    _, found = scrape(standalone.http_url)
    for result in ("ok", "timeout", "refused", "invalid", "error", "overflow", "abandoned"):
        expected = sum(1 for _, _, counted in FAILURES if counted == result)
        counted = value(found, "tidings_live_snapshots_total", app=APP_ID, result=result)
        assert counted == expected, (result, counted)


async def check_tidings_js(http_url: str) -> None:
    """200 with the package's file, an ETag, revalidation; 304 while the ETag matches."""
    source = Path(__file__).parents[2] / "src" / "tidings" / "static" / "tidings.js"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{http_url}/tidings.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/javascript")
            assert await response.read() == source.read_bytes()
            etag = response.headers["ETag"]
            assert response.headers["Cache-Control"] == "no-cache"
        for matching in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            async with http.get(
                f"{http_url}/tidings.js", headers={"If-None-Match": matching}
            ) as response:
                assert response.status == 304, matching
                assert await response.read() == b""
                assert response.headers["ETag"] == etag
        async with http.get(
            f"{http_url}/tidings.js", headers={"If-None-Match": '"other"'}
        ) as response:
            assert response.status == 200


async def test_tidings_js_under_tidings_serve(server: ServerProcess) -> None:
    await check_tidings_js(server.http_url)


async def test_tidings_js_under_asgi_wrapping_fastapi(tmp_path: Path) -> None:
    apps_dir = str(Path(__file__).resolve().parent / "asgi_apps")
    if apps_dir not in sys.path:
        sys.path.insert(0, apps_dir)
    from asgi_server import AsgiServer

    server = AsgiServer("fastapi", tmp_path)
    await asyncio.to_thread(server.start)
    try:
        await check_tidings_js(server.http_url)
        # The wrapped app's own routes are still its own.
        status, body = await asyncio.to_thread(server.request, "GET", "/hello")
        assert status == 200
    finally:
        server.stop()
