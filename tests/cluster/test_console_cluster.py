"""The debug console is cluster-wide over one real Redis (docs/console.md, "Cluster").

A stream served by node A shows what happens on node B; its stats sum both nodes; once the
stream closes, B stops sending; garbage on the console's paths is dropped and counted; and
under ``--workers 2`` a login made on one worker is good on the other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from console_client import ConsoleClient
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUIET,
    TIMEOUT,
    SocketOpener,
    raw_http,
    unique,
)

from redis_server import RedisBus


def node_id(http_url: str) -> str:
    body = raw_http(http_url, "GET", "/ready").json()
    assert isinstance(body, dict) and isinstance(body.get("node"), str), body
    return str(body["node"])


async def test_a_stream_on_one_node_shows_the_others_traffic_and_sums_stats(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    bus: RedisBus,
) -> None:
    node_a, node_b = make_cluster(2, console=True)
    a_id, b_id = node_id(node_a.http_url), node_id(node_b.http_url)
    console = ConsoleClient(node_a.http_url)
    try:
        await console.login(key=APP_KEY, secret=APP_SECRET)
        stream = await console.stream(APP_ID)
        on_a = await open_socket(node_a.ws_url)
        # Node B hears of the watch through Redis: what B does is on A's stream.
        channel, private = unique("news"), unique("private-chat")
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:
            on_b = await open_socket(node_b.ws_url)
            try:
                await stream.expect(
                    "B's connection", QUIET, type="connection", socket_id=on_b.socket_id
                )
                break
            except AssertionError:
                assert time.monotonic() < deadline, "node B never sent its records"
                await on_b.close()
        record = await stream.expect("B's connection", type="connection", socket_id=on_b.socket_id)
        assert record["node"] == b_id and record["transport"] == "ws"
        await on_b.subscribe(channel)
        subscribed = await stream.expect(
            "B's subscription", type="subscribed", socket_id=on_b.socket_id, channel=channel
        )
        assert subscribed["node"] == b_id
        await on_a.subscribe_private(private)
        await on_b.subscribe_private(private)
        await on_b.send_event("client-hello", {"from": "b"}, private)
        await on_a.expect("client-hello", private)
        event = await stream.expect("B's client event", type="client_event", event="client-hello")
        assert event["node"] == b_id and event["socket_id"] == on_b.socket_id

        # Stats are summed over both nodes by A.
        summed = await stream.expect("summed stats", type="stats", nodes=2, connections=2)
        assert summed["node"] == a_id

        # Once the stream closes, B stops sending to A.
        listener = bus.listen(bus.node(a_id))
        try:
            assert await asyncio.to_thread(heard_from, bus, listener, b_id, 3 * TIMEOUT)
            stream.close()
            await console.close()
            await asyncio.sleep(0)
            # The unwatch is sent as soon as A sees its last listener go (within a second).
            await asyncio.to_thread(quiet_after, bus, listener, b_id, 3 * TIMEOUT)
            for _ in range(3):  # traffic on B now records nothing for A
                await (await open_socket(node_b.ws_url)).subscribe(unique("after"))
            assert not await asyncio.to_thread(heard_from, bus, listener, b_id, 1.5)
        finally:
            listener.close()
    finally:
        await console.close()

    # The overview is cluster-wide too: it watches the app while it is polled.
    poller = ConsoleClient(node_a.http_url)
    try:
        await poller.login(key=APP_KEY, secret=APP_SECRET)
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:
            status, overview, _ = await poller.request(
                "GET", f"/console/api/apps/{APP_ID}/overview"
            )
            assert status == 200, overview
            if overview["nodes"] == 2:
                break
            assert time.monotonic() < deadline, overview
            await asyncio.sleep(0.1)
        assert overview["connections"] == 5  # on_a, on_b and the three made after the lapse
    finally:
        await poller.close()


def heard_from(bus: RedisBus, pubsub: Any, sender: str, within: float) -> bool:
    """Whether a console batch from ``sender`` arrives within ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        data = bus.next_message(pubsub, left)
        if data is not None and data.startswith(b"C") and json.loads(data[1:]).get("n") == sender:
            return True
    return False


def quiet_after(bus: RedisBus, pubsub: Any, sender: str, within: float) -> None:
    """Until ``sender`` has been silent for 1.5 s (past its batch and stats interval)."""
    deadline = time.monotonic() + within
    while heard_from(bus, pubsub, sender, 1.5):
        assert time.monotonic() < deadline, f"node {sender} kept sending console batches"


async def test_garbage_on_the_console_paths_is_dropped_and_the_stream_goes_on(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    bus: RedisBus,
) -> None:
    (node,) = make_cluster(1, console=True)
    me = node_id(node.http_url)
    console = ConsoleClient(node.http_url)
    try:
        await console.login(key=APP_KEY, secret=APP_SECRET)
        stream = await console.stream(APP_ID)
        garbage = [
            (bus.node(me), b"C{not json"),
            (bus.node(me), b"C[1, 2]"),
            (bus.node(me), b'C{"a": "12345", "n": "x", "r": "no"}'),
            (bus.node(me), b"Zunknown kind"),
            (bus.node(me), b"C" + b"x" * 1024 * 1024),
            (bus.control, b'{"o":"elsewhere","a":"12345","k":"console","d":"nonsense"}'),
            (bus.control, b'{"o":"elsewhere","a":"12345","k":"console","d":"{}"}'),
        ]
        for topic, data in garbage:
            assert bus.publish(topic, data) == 1, topic
        # Still listening, still streaming.
        socket = await open_socket(node.ws_url)
        await stream.expect(
            "a connection after the garbage", type="connection", socket_id=socket.socket_id
        )
        await socket.ping()
        counted = 'tidings_redis_dropped_messages_total{reason="handler_error"} 7.0'
        deadline = time.monotonic() + TIMEOUT
        while counted not in raw_http(node.http_url, "GET", "/metrics").body.decode():
            assert time.monotonic() < deadline, "the garbage was not counted"
            await asyncio.sleep(0.05)
    finally:
        await console.close()


async def test_a_login_on_one_worker_is_good_on_the_other(
    make_server: Callable[..., Any], redis_backend: str, redis_prefix: str
) -> None:
    server = make_server(workers=2, redis=redis_backend, redis_prefix=redis_prefix, console=True)
    deadline = time.monotonic() + 4 * TIMEOUT
    while server.logs().count("listening on ") < 2:
        assert time.monotonic() < deadline, server.logs()
        await asyncio.sleep(0.05)
    console = ConsoleClient(server.http_url)
    try:
        await console.login(key=APP_KEY, secret=APP_SECRET)
        cookie = next(iter(console.session.cookie_jar))
        headers = {"Cookie": f"{cookie.key}={cookie.value}", "Connection": "close"}

        # Each stream on a new connection: the kernel spreads them over both workers, and
        # every one of them takes the cookie. The node id of each stats record names the
        # worker that served it.
        async def served_by() -> str:
            fresh = ConsoleClient(server.http_url)
            try:
                stream_path = f"/console/api/apps/{APP_ID}/stream"
                async with fresh.session.get(
                    server.http_url + stream_path, headers=headers
                ) as response:
                    assert response.status == 200, await response.text()
                    async with asyncio.timeout(TIMEOUT):
                        async for raw in response.content:
                            line = raw.decode()
                            if line.startswith("data: "):
                                record = json.loads(line[6:])
                                if record["type"] == "stats":
                                    return str(record["node"])
            finally:
                await fresh.close()
            raise AssertionError("the stream ended before its first stats")

        workers = await asyncio.gather(*(served_by() for _ in range(16)))
        assert len(set(workers)) == 2, workers

        # A logout on one worker reaches the other: the cookie is refused everywhere.
        status, _, _ = await console.request("POST", "/console/api/logout")
        assert status == 204
        deadline = time.monotonic() + TIMEOUT
        while True:
            statuses = []
            for _ in range(16):
                fresh = ConsoleClient(server.http_url)
                try:
                    status, _, _ = await fresh.request(
                        "GET", "/console/api/session", headers=headers
                    )
                    statuses.append(status)
                finally:
                    await fresh.close()
            if statuses == [401] * 16:
                break
            assert time.monotonic() < deadline, statuses
    finally:
        await console.close()
