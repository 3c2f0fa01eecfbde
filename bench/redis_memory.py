"""Redis memory per subscription, channel, presence member, signed-in socket and stored
history message.

Starts a private redis-server on a free loopback port, adds 10,000 of each through the
RedisBroker (history: its store, the scripts every node runs) and reports ``used_memory``
deltas (the figures in docs/deployment.md and docs/benchmarks.md):

    .venv/bin/python bench/redis_memory.py [--n 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import tempfile
import time

import redis
from redis import asyncio as aioredis

from tidings.brokers.control import ControlMessage
from tidings.brokers.history import Position
from tidings.brokers.redis import RedisBroker
from tidings.brokers.redis.cluster import ClusterRedis
from tidings.brokers.redis.history import HistoryStore
from tidings.protocol.session import Member


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ignore_delivery(
    app_id: str, channel: str, frame: bytes, exclude: str | None, position: Position | None
) -> None:
    pass


def ignore_control(app_id: str, message: ControlMessage) -> None:
    pass


async def measure(url: str, port: int, n: int) -> None:
    client = redis.Redis(port=port)

    def used() -> int:
        return int(client.info("memory")["used_memory"])

    broker = RedisBroker(url, prefix="mem", node_id="n1")
    await broker.start(ignore_delivery, ignore_control)
    steps = [
        (
            "subscription to an occupied channel",
            lambda i: broker.subscriptions.subscribe("1", "one-channel", f"{i}.1"),
        ),
        (
            "channel with its first subscriber",
            lambda i: broker.subscriptions.subscribe("1", f"channel-{i}", f"{i}.2"),
        ),
        (
            "presence member (~20 B user_info)",
            lambda i: broker.presence.join(
                "1",
                f"presence-room-{i // 100}",
                f"{i}.3",
                Member(f"user-{i}", {"name": "User"}),
                100,
            ),
        ),
        ("signed-in socket", lambda i: broker.presence.user_online("1", f"user-{i}", f"{i}.4")),
    ]
    for label, step in steps:
        before = used()
        for i in range(n):
            await step(i)
        print(f"{label:40} {(used() - before) / n:8.0f} B")
    await broker.close()
    print(f"keys left after a clean stop: {client.dbsize()}")


def history_event(i: int, size: int) -> bytes:
    """A Pusher event of about ``size`` bytes, as the node stores it."""
    head = b'{"event":"message","channel":"chat-%d","data":"' % (i % 100)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


async def measure_history(url: str, port: int, n: int) -> None:
    client = redis.Redis(port=port)
    server = aioredis.Redis.from_url(url)
    history = HistoryStore(ClusterRedis(server, "hist", sharded=False), origin="n1")

    def used() -> int:
        return int(client.info("memory")["used_memory"])

    for size in (100, 1000):
        before = used()
        for i in range(n):  # 100 channels, n / 100 messages each, all kept
            await history.publish(
                "1", f"chat-{size}-{i % 100}", history_event(i, size), "1.1", size=n, ttl=3600
            )
        print(f"{f'stored message (~{size} B event)':40} {(used() - before) / n:8.0f} B")
    before = used()
    for i in range(n):
        await history.publish("1", f"room-{i}", history_event(i, 100), None, size=100, ttl=3600)
    print(f"{'history channel with one ~100 B message':40} {(used() - before) / n:8.0f} B")
    await server.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            asyncio.run(measure(f"redis://127.0.0.1:{port}/0", port, args.n))
            asyncio.run(measure_history(f"redis://127.0.0.1:{port}/0", port, args.n))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
