"""What the broker contract suite (tests/unit/brokers/contract/) shares: started brokers
that record what they deliver, and the waits that make asynchronous delivery testable.

Every behaviour of the suite is written once and runs against ``MemoryBroker`` and against
``RedisBroker`` on a real redis-server (plain and sharded pub/sub) and on a real 3-master
Redis Cluster, each test under its own key prefix. Cluster behaviours (two nodes sharing a
prefix) run on Redis only: the memory broker is a single node by design.

Deliveries through Redis are asynchronous. Waits are bounded polls; "nothing arrived" is
proved by publishing a later marker the receiver must get, from the same node, and waiting
for it: Redis pub/sub delivers to one subscriber connection in publish order, so once the
marker is in, anything published before it would be too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from server_process import free_port
from tidings.brokers.base import Broker
from tidings.brokers.control import (
    ControlMessage,
)
from tidings.brokers.history import Position
from tidings.protocol.session import Member

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
NODE_TTL = 2 * TIMEOUT  # long enough that no live test node is ever declared dead

APP = "12345"
OTHER_APP = "23456"

IMPLEMENTATIONS = ["memory", "redis", "redis-sharded", "redis-cluster"]
CLUSTERED = ["redis", "redis-sharded", "redis-cluster"]  # memory is one node by design
# A node on its own: the memory broker, and a Redis broker that cannot reach its Redis
# (degraded: it answers from its own sockets).
ALONE = ["memory", "redis-unreachable"]

Delivery = tuple[str, str, bytes, str | None]


async def eventually(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def event_message(event: str, data: str = "") -> bytes:
    """What the node publishes: one Pusher event, unframed JSON (brokers/bus.py)."""
    return json.dumps({"event": event, "data": data}).encode()


# Messages of any size, with separators and UTF-8 in their payloads.
ODD_MESSAGES = [
    '{"event":"é🚀","data":"a\\nb | c:d # \\u0000"}'.encode(),
    event_message("x", "x" * 230),
    event_message("y", "y" * 70_000),
    event_message("\x00|:#\n\t", "é☃ \x00"),
    event_message(""),
]


def marker() -> bytes:
    return event_message("marker", uuid4().hex)


@dataclass
class Node:
    """A started broker and everything it handed to deliver() and control()."""

    name: str
    broker: Broker
    deliveries: list[Delivery] = field(default_factory=list)
    controls: list[tuple[str, ControlMessage]] = field(default_factory=list)

    # The position each delivery came with (``broker.history``), index for index.
    positions: list[Position | None] = field(default_factory=list)

    def deliver(
        self,
        app_id: str,
        channel: str,
        frame: bytes,
        exclude: str | None,
        position: Position | None,
    ) -> None:
        self.deliveries.append((app_id, channel, frame, exclude))
        self.positions.append(position)

    async def control(self, app_id: str, message: ControlMessage) -> None:
        self.controls.append((app_id, message))

    def frames(self, app_id: str, channel: str) -> list[bytes]:
        return [f for a, c, f, _ in self.deliveries if (a, c) == (app_id, channel)]

    async def wait_frame(self, app_id: str, channel: str, frame: bytes) -> None:
        await eventually(
            lambda: frame in self.frames(app_id, channel),
            f"{self.name} to receive {frame!r} on {app_id}/{channel}; got {self.deliveries!r}",
        )

    async def wait_delivery(
        self, match: Callable[[Delivery], bool], what: str, timeout: float = TIMEOUT
    ) -> None:
        await eventually(
            lambda: any(match(d) for d in self.deliveries),
            f"{self.name} to receive {what}; got {self.deliveries!r}",
            timeout,
        )

    async def wait_control(self, app_id: str, message: ControlMessage) -> None:
        await eventually(
            lambda: (app_id, message) in self.controls,
            f"{self.name} to run control {message!r}; got {self.controls!r}",
        )


class BrokerFactory:
    """``await make_broker()`` → a started Node; nodes of one test share a Redis prefix."""

    def __init__(self, kind: str, redis_url: str | None, prefix: str) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = prefix
        self.nodes: list[Node] = []
        self.now = 1000.0  # the memory broker's clock (history expiry): tests move it

    async def __call__(
        self, name: str | None = None, prefix: str | None = None, node_ttl: float = NODE_TTL
    ) -> Node:
        name = name or f"node{len(self.nodes) + 1}"
        prefix = prefix or self.prefix
        broker: Broker
        if self.kind == "redis-unreachable":
            from tidings.brokers.redis import RedisBroker

            unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
            broker = RedisBroker(unreachable, prefix=prefix, node_id=f"{prefix}-{name}")
        elif self.kind == "memory":
            from tidings.brokers.memory import MemoryBroker

            broker = MemoryBroker(clock=lambda: self.now)
        else:
            from tidings.brokers.redis import RedisBroker

            assert self.redis_url is not None
            broker = RedisBroker(
                self.redis_url,
                prefix=prefix,
                node_id=f"{prefix}-{name}",
                sharded=self.kind == "redis-sharded",
                node_ttl=node_ttl,
                # The tests reconcile the rate counters themselves (no timer races them).
                rate_reconcile_interval=3600,
            )
        node = Node(name, broker)
        self.nodes.append(node)  # closed at teardown even if start() fails half-way
        await broker.start(node.deliver, node.control)
        return node

    async def close_node(self, node: Node) -> None:
        self.nodes.remove(node)
        await asyncio.wait_for(node.broker.close(), 2 * TIMEOUT)

    async def close(self) -> None:
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                await asyncio.wait_for(node.broker.close(), 2 * TIMEOUT)
            except BaseException as exc:  # close every node before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


def by_user(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m.user_id)


cluster = pytest.mark.parametrize("make_broker", CLUSTERED, indirect=True)
"""A behaviour of several nodes sharing a prefix (Redis only)."""
