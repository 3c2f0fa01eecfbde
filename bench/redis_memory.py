"""Redis memory per subscription, channel, presence member and signed-in socket.

Starts a private redis-server on a free loopback port, adds 10,000 of each through the
RedisBroker and reports ``used_memory`` deltas (the figures in docs/deployment.md):

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

from tidings.brokers.control import ControlMessage
from tidings.brokers.redis import RedisBroker
from tidings.protocol.session import Member


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ignore_delivery(app_id: str, channel: str, frame: bytes, exclude: str | None) -> None:
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
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
