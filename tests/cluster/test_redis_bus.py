"""One bad message never deafens a node (brokers/bus.py); what one read brings is written
together.

Anything can be PUBLISHed on the Redis channels a node listens to. Here garbage is sent with
redis-py to every one of them; the node drops and counts it (``/metrics``) and still hears
the next real publication and member event. And if its listener task dies anyway, the
node says it is degraded, starts a new one and hears again. Publications from the bus join
the node's per-tick fan-out (the Coalescer) like local ones, and a node's own publication is
written to its sockets after the publisher has been answered.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    SocketOpener,
    eventually,
    raw_http,
    rest_request,
    unique,
)

from redis_server import RedisBus
from tidings.config import AppSettings, Settings
from tidings.core.hub import Coalescer
from tidings.lifecycle import broker_bus_stats, broker_round_trips, make_node
from tidings.protocol.frames import text_frame
from tidings.server.app import WEBSOCKET, build_application
from tidings.server.health import Health
from tidings.server.metrics import Metrics

DROPPED = re.compile(r'^tidings_redis_dropped_messages_total\{reason="(\w+)"\} (\S+)$', re.M)
RESTARTS = re.compile(r"^tidings_redis_listener_restarts_total (\S+)$", re.M)


def dropped(http_url: str) -> dict[str, int]:
    text = raw_http(http_url, "GET", "/metrics").body.decode()
    return {reason: int(float(n)) for reason, n in DROPPED.findall(text)}


def ready(http_url: str) -> dict[str, Any]:
    body = raw_http(http_url, "GET", "/ready").json()
    assert isinstance(body, dict), body
    return body


def trigger(http_url: str, channel: str, name: str) -> None:
    body = {"name": name, "channel": channel, "data": json.dumps({"n": name})}
    resp = rest_request(http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 200, (resp.status, resp.body)


async def test_garbage_on_the_bus_is_dropped_counted_and_the_node_still_hears(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    bus: RedisBus,
) -> None:
    node_a, node_b = make_cluster(2)
    public, presence = unique("public"), unique("presence")
    subscriber = await open_socket(node_b.ws_url)
    await subscriber.subscribe(public)
    member = await open_socket(node_b.ws_url)
    await member.subscribe_presence(presence, unique("bob"))
    node_b_id = ready(node_b.http_url)["node"]

    publications, control, to_node_b = bus.topic(public), bus.control, bus.node(node_b_id)
    one_mb = 1024 * 1024
    garbage: list[tuple[bytes, bytes, str]] = [
        (publications, b"\xff\xfe\x00\x00garbage bytes", "malformed"),
        (publications, b"no separators at all", "malformed"),
        (publications, b"B" * one_mb, "malformed"),  # a 1 MB blob
        # A framed message (what nodes before unframed messages wrote) is not a message.
        (publications, b"elsewhere\x00\x00" + text_frame(b'{"event":"framed"}'), "bad_frame"),
        (publications, b'elsewhere\x00\x00{"event":"trunc', "bad_frame"),
        (publications, b"elsewhere\x00\x00[1, 2]", "bad_frame"),
        (publications, b'elsewhere\x00\x00{"event":"\xff"}', "bad_frame"),  # not UTF-8
        # A 1 MB message cut short would corrupt every stream it reached.
        (publications, b'elsewhere\x00\x00{"event":"' + b"x" * one_mb, "bad_frame"),
        (control, b"\xff\xfe garbage bytes", "malformed"),
        (control, b'{"o":"elsewhere","a":"12345","k":"member_add', "malformed"),  # truncated
        (control, b"C" * one_mb, "malformed"),
        (control, b'["o", "a", "k"]', "malformed"),
        (control, b'{"o":"elsewhere","a":"12345","k":"member_added","u":1}', "malformed"),
        (control, b'{"o":"elsewhere","a":"12345","k":"explode","u":"x"}', "unknown_kind"),
        # Decoded by the broker, then the HTTP fallback's relay handler raises on them.
        (to_node_b, b"\xff garbage bytes", "handler_error"),
        (to_node_b, b'{"t":"send"}', "handler_error"),
    ]
    for topic, data, _ in garbage:
        assert bus.publish(topic, data) >= 1, topic  # node B listens on each

    # Redis delivers to node B's listener in publish order: the real publication comes after
    # all of the garbage, and it is the next thing the subscriber gets (nothing of the
    # garbage was written to it).
    await asyncio.to_thread(trigger, node_a.http_url, public, "real")
    message = await subscriber.expect("real", public)
    assert json.loads(message["data"]) == {"n": "real"}
    # Control messages too: a member joining on node A is announced on node B.
    carol = unique("carol")
    await (await open_socket(node_a.ws_url)).subscribe_presence(presence, carol)
    added = await member.expect("pusher_internal:member_added", presence)
    assert json.loads(added["data"])["user_id"] == carol

    expected = {"malformed": 0, "bad_frame": 0, "unknown_kind": 0, "handler_error": 0}
    for _, _, reason in garbage:
        expected[reason] += 1
    assert await asyncio.to_thread(dropped, node_b.http_url) == expected
    # Logged, not once per message: one line per reason (the next after a minute).
    logs = node_b.logs()
    for reason in expected:
        assert logs.count(f"bytes, {reason})") == 1, (reason, logs)
    await subscriber.ping()


@asynccontextmanager
async def node_in_this_process(redis_url: str, prefix: str) -> AsyncIterator[tuple[Any, str]]:
    """A whole Tidings server (node, Redis broker, HTTP edge) in the test's event loop, so
    the test can reach its listener task; yields the node and its http URL."""
    settings = Settings(
        redis=redis_url,
        redis_prefix=prefix,
        node_ttl=3,
        apps=(AppSettings(id=APP_ID, key=APP_KEY, secret=APP_SECRET),),
    )
    node = make_node(settings)
    await node.start()
    metrics = Metrics(
        node, None, broker_round_trips(node.broker), bus=broker_bus_stats(node.broker)
    )
    application = build_application(node, settings, Health(node.broker, "redis"), metrics)
    runner = web.AppRunner(application, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        yield node, f"http://127.0.0.1:{port}"
    finally:
        await node.drain()
        await application[WEBSOCKET].close()
        await runner.cleanup()
        await node.close()


def listener_task() -> asyncio.Task[Any]:
    """The Redis broker's listener task in this loop (found by what it runs)."""
    (task,) = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "Listener.listen_forever"
    ]
    return task


@pytest.mark.timeout(120)
async def test_a_dead_listener_is_reported_degraded_and_restarted(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    redis_backend: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (other,) = make_cluster(1)
    channel = unique("public")
    async with node_in_this_process(redis_backend, redis_prefix) as (node, http_url):
        sock = await open_socket(http_url.replace("http", "ws", 1))
        await sock.subscribe(channel)
        await asyncio.to_thread(trigger, other.http_url, channel, "before")
        await sock.expect("before", channel)

        # Hold the new listener before it resyncs, so the degraded state can be seen.
        listener = node.broker.listener
        resync = listener._resync
        release = asyncio.Event()

        async def held_resync() -> None:
            await release.wait()
            await resync()

        monkeypatch.setattr(listener, "_resync", held_resync)
        listener_task().cancel()  # dies as a bug or a stray BaseException would kill it

        async def is_degraded() -> bool:
            return (await asyncio.to_thread(ready, http_url))["degraded"] is True

        await eventually(is_degraded, timeout=2 * TIMEOUT)
        metrics = (await asyncio.to_thread(raw_http, http_url, "GET", "/metrics")).body
        assert RESTARTS.findall(metrics.decode()) == ["1.0"]

        release.set()

        async def recovered() -> bool:
            return (await asyncio.to_thread(ready, http_url))["degraded"] is False

        await eventually(recovered, timeout=4 * TIMEOUT)
        # It hears the other node again (through the new listener's subscriptions).
        await asyncio.to_thread(trigger, other.http_url, channel, "after")
        assert json.loads((await sock.expect("after", channel))["data"]) == {"n": "after"}


# -- the bus and the node's per-tick fan-out (issue 17: a Redis pair as efficient as one node)


def record_flushes(monkeypatch: pytest.MonkeyPatch, channel: str) -> list[list[bytes]]:
    """The messages to ``channel`` of each Coalescer flush: one write per socket each."""
    flushes: list[list[bytes]] = []
    flush = Coalescer.flush

    def recording(self: Coalescer) -> None:
        batch = [p[2] for p in self._pending if p[1] == channel]  # noqa: SLF001
        if batch:
            flushes.append(batch)
        flush(self)

    monkeypatch.setattr(Coalescer, "flush", recording)
    return flushes


async def test_bus_messages_read_together_are_written_to_a_socket_together(
    open_socket: SocketOpener,
    bus: RedisBus,
    redis_backend: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Publications that arrive in one read from Redis reach each socket in one write (the
    Coalescer's tick), on one Redis and on a Redis Cluster's sharded connections alike,
    and in order."""
    channel = unique("public")
    async with node_in_this_process(redis_backend, redis_prefix) as (_, http_url):
        sock = await open_socket(http_url.replace("http", "ws", 1))
        await sock.subscribe(channel)
        flushes = record_flushes(monkeypatch, channel)
        events = [
            json.dumps({"event": f"e{i}", "channel": channel, "data": "{}"}).encode()
            for i in range(3)
        ]
        # As another node writes them (origin, no excluded socket), in one pipeline.
        await asyncio.to_thread(
            bus.publish_many, bus.topic(channel), [b"elsewhere\x00\x00" + e for e in events]
        )
        for i in range(3):
            await sock.expect(f"e{i}", channel)
        assert flushes == [events]


async def test_a_rest_publish_is_answered_before_its_node_writes_it_to_its_sockets(
    open_socket: SocketOpener,
    redis_backend: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The publishing node writes a publication to its own sockets once Redis has taken it,
    in the tick that answers the publisher: the answer never waits for that fan-out, so the
    publisher's next publications arrive while it runs and are written together."""
    channel = unique("public")
    async with node_in_this_process(redis_backend, redis_prefix) as (node, http_url):
        sock = await open_socket(http_url.replace("http", "ws", 1))
        await sock.subscribe(channel)

        published: list[asyncio.Future[bool]] = []
        publish = node.broker.pubsub.publish

        def keeping(*args: Any) -> asyncio.Future[bool]:
            published.append(publish(*args))
            return published[-1]

        answered: list[str] = []
        trigger_all = node.trigger_all

        async def noting(*args: Any, **kwargs: Any) -> None:
            await trigger_all(*args, **kwargs)
            answered.append("trigger_all returned")

        flushed: list[tuple[bool, list[str]]] = []
        flush = Coalescer.flush

        def checking(self: Coalescer) -> None:
            if any(p[1] == channel for p in self._pending):  # noqa: SLF001
                flushed.append((all(f.done() for f in published), list(answered)))
            flush(self)

        monkeypatch.setattr(node.broker.pubsub, "publish", keeping)
        monkeypatch.setattr(node, "trigger_all", noting)
        monkeypatch.setattr(Coalescer, "flush", checking)
        await asyncio.to_thread(trigger, http_url, channel, "first")
        await sock.expect("first", channel)
        assert len(published) == 1
        assert flushed == [(True, ["trigger_all returned"])]
