"""A long resync on a real Redis: the node keeps heartbeating, so the others never reap it.

bench/hold.py at 100,000 connections found it: a worker holding ~17k sockets wrote them
back one round trip at a time after an outage, sent no heartbeat meanwhile (the heartbeat
task waits while the link is degraded), and the other workers reaped it mid-resync, which
started the resync over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_server import RedisServer
from tidings.brokers.redis import RedisBroker
from tidings.brokers.redis.liveness import RESYNC_CONCURRENCY

APP = "app"
SOCKETS = 4 * RESYNC_CONCURRENCY
NODE_TTL = 3.0  # longer than the listener's reconnect backoff (at most 2 s)
SCRIPT_DELAY = 1.0  # per subscribe script: four rounds of them outlast NODE_TTL


async def until(condition: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_resync_longer_than_node_ttl_heartbeats_and_is_not_reaped(
    redis_server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.redis")
    url = redis_server.url
    a = RedisBroker(url, prefix=redis_prefix, node_id=f"{redis_prefix}-a", node_ttl=NODE_TTL)
    b = RedisBroker(url, prefix=redis_prefix, node_id=f"{redis_prefix}-b", node_ttl=NODE_TTL)
    reaped: list[tuple[str, str, str, str]] = []
    b.on_reaped(lambda *event: reaped.append(event))
    for broker in (a, b):
        await broker.start(lambda *args: None, lambda *args: None)
    try:
        await until(lambda: not a.degraded and not b.degraded, 10)
        await a.subscriptions.subscribe(APP, "before", "1.0")  # a reap would vacate it
        scripts = a.liveness._scripts  # noqa: SLF001 (slowed down to make the resync long)
        subscribe = scripts.subscribe
        in_flight = most = 0

        async def slow_subscribe(app_id: str, channel: str, socket_id: str) -> int:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await asyncio.sleep(SCRIPT_DELAY)
                return await subscribe(app_id, channel, socket_id)
            finally:
                in_flight -= 1

        scripts.subscribe = slow_subscribe  # type: ignore[method-assign]
        beats = 0
        heartbeat = scripts.heartbeat

        async def counted_heartbeat(node_ttl: float) -> tuple[bool, list[str]]:
            nonlocal beats
            beats += 1
            return await heartbeat(node_ttl)

        scripts.heartbeat = counted_heartbeat  # type: ignore[method-assign]

        # An outage: the sockets that arrive meanwhile exist only in a's mirror.
        a.link.failed(RedisConnectionError("outage for the test"))
        for i in range(1, SOCKETS + 1):
            await a.subscriptions.subscribe(APP, "c", f"1.{i}")
        beats_before = beats
        await until(lambda: not a.degraded, 6 * SOCKETS // RESYNC_CONCURRENCY * SCRIPT_DELAY)

        assert await b.subscriptions.count(APP, "c") == SOCKETS
        assert most == RESYNC_CONCURRENCY  # written back concurrently, within the bound
        # At least one heartbeat between rounds: the resync outlasted NODE_TTL.
        assert beats - beats_before >= 1 + SOCKETS // RESYNC_CONCURRENCY - 1
        assert reaped == []
        assert await b.subscriptions.count(APP, "before") == 1
        assert not [r.message for r in caplog.records if "dead" in r.message], caplog.text
    finally:
        for broker in (a, b):
            await broker.close()
