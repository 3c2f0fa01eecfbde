"""server/websocket_protocol.py: the 101 goes out with the connection's first frame.

A recording transport stands in for the socket (only ``switch_protocols`` and one
``ProtocolConnection`` are under test); the node is a real one on the memory broker.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry
from tidings.node import Node
from tidings.server.websocket_protocol import (
    ProtocolConnection,
    switch_protocols,
    switching_protocols,
)

APP = App("12345", "app-key", "app-secret")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class RecordingTransport:
    """What a ProtocolConnection calls on its transport, the writes recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def switched(node: Node, transport: RecordingTransport) -> ProtocolConnection:
    def connect(t: Any) -> ProtocolConnection:
        return ProtocolConnection(
            node, node.new_session(APP), APP, t, 1 << 20, set(), node.outgoing,
            node.counters(APP), 1 << 16,
        )  # fmt: skip

    connection = switch_protocols(transport, KEY, connect, None, object())  # type: ignore[arg-type]
    assert transport.protocol is connection
    return connection


def masked_ping() -> bytes:
    mask = os.urandom(4)
    return bytes([0x89, 0x82]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"hi"))


def test_the_101_and_the_greeting_are_one_write() -> None:
    async def main() -> None:
        node = Node(AppRegistry.of([APP]), MemoryBroker())
        transport = RecordingTransport()
        connection = switched(node, transport)
        assert transport.writes == []
        node.attach(connection)
        connection.flush_head()  # nothing left to flush
        [write] = transport.writes
        head = switching_protocols(KEY)
        assert write.startswith(head)
        assert b"pusher:connection_established" in write[len(head) :]

    asyncio.run(main())


def test_a_connection_that_sends_nothing_first_gets_its_101_on_flush() -> None:
    async def main() -> None:
        node = Node(AppRegistry.of([APP]), MemoryBroker())
        transport = RecordingTransport()
        connection = switched(node, transport)
        connection.flush_head()
        connection.flush_head()
        assert transport.writes == [switching_protocols(KEY)]

    asyncio.run(main())


def test_a_reply_to_an_early_frame_carries_the_101_first() -> None:
    async def main() -> None:
        node = Node(AppRegistry.of([APP]), MemoryBroker())
        transport = RecordingTransport()
        connection = switched(node, transport)
        connection.data_received(masked_ping())  # before the 101 was read (take_over's tail)
        node.attach(connection)
        pong, greeting = transport.writes
        assert pong == switching_protocols(KEY) + b"\x8a\x02hi"
        assert b"pusher:connection_established" in greeting

    asyncio.run(main())
