"""A Redis Cluster master dies and its replica takes over: what the nodes' clients see.

The cluster is this test's own (3 masters, one replica each, ``cluster-node-timeout`` 1 s):
the master that serves a channel's slot is killed with SIGKILL. Until the replica is
promoted, commands on that slot fail: the nodes go degraded (``/ready`` says so), a REST
publish is refused with 503 and ``Retry-After: 1``, WebSocket clients stay connected and
keep their subscriptions. Once the replica serves the slot, the nodes reconnect, resync
and deliver again. The window is printed (``-s``), not asserted: it is a property of the
machine and of Redis's failure detection (docs/redis.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pusher_helpers import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    eventually,
    raw_http,
    rest_request,
    unique,
)

from redis_server import RedisClusterServer


def publish(http_url: str, channel: str, name: str) -> int:
    body = {"name": name, "channel": channel, "data": json.dumps({"n": name})}
    resp = rest_request(http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status in (200, 503), (resp.status, resp.body)
    return resp.status


async def publish_until_delivered(
    node: Any, sock: PusherSocket, channel: str, name: str, within: float
) -> int:
    """Publish ``name-<n>`` through ``node`` until ``sock`` gets one, as a publisher that
    retries would (after a 503, or after a publication lost while a listener
    reconnected: pub/sub is at most once). Returns how many were refused with 503."""
    refused, deadline = 0, time.monotonic() + within
    for attempt in range(10_000):
        assert time.monotonic() < deadline, f"nothing delivered within {within} s"
        if await asyncio.to_thread(publish, node.http_url, channel, f"{name}-{attempt}") == 503:
            refused += 1
            await asyncio.sleep(0.2)  # Retry-After: 1, shortened for the test
            continue
        try:
            while True:
                message = await sock.recv(timeout=1.0)
                if message.get("event", "").startswith(f"{name}-"):
                    return refused
        except TimeoutError:
            continue  # lost on the way: publish the next one
    raise AssertionError("unreachable")


def ready(node: Any) -> dict[str, Any]:
    body = raw_http(node.http_url, "GET", "/ready").json()
    assert isinstance(body, dict), body
    return body


async def test_a_killed_master_fails_over_to_its_replica_and_delivery_resumes(
    make_server: Callable[..., Any], open_socket: SocketOpener, tmp_path: Path, redis_prefix: str
) -> None:
    with RedisClusterServer(tmp_path / "redis-cluster", replicas=1) as redis_cluster:
        settings = {"redis": redis_cluster.url, "redis_prefix": redis_prefix, "node_ttl": 3}
        publisher, serving = make_server(**settings), make_server(**settings)
        channel = unique("public")
        sock = await open_socket(serving.ws_url)
        await sock.subscribe(channel)
        assert await publish_until_delivered(publisher, sock, channel, "before", TIMEOUT) == 0

        topic = f"{redis_prefix}#{{{APP_ID}#{channel}}}"
        master = redis_cluster.master_of(topic)
        assert master is not None
        master.kill()
        killed = time.monotonic()
        refused = await publish_until_delivered(publisher, sock, channel, "after", 8 * TIMEOUT)
        print(
            f"\nmaster killed: {refused} publish(es) refused with 503; delivery back after "
            f"{time.monotonic() - killed:.1f} s"
        )
        promoted = redis_cluster.master_of(topic)
        assert promoted is not None and promoted is not master  # the replica serves it now

        # Both nodes end up healthy, and the client never had to reconnect.
        async def healthy() -> bool:
            states = [await asyncio.to_thread(ready, n) for n in (publisher, serving)]
            return not any(state["degraded"] for state in states)

        await eventually(healthy, timeout=4 * TIMEOUT)
        await sock.ping()
