"""Our own WebSocket protocol after the handshake (``websocket_engine``), byte by byte.

A raw TCP client sends literal frames, so each test can send what no library would
(unmasked frames, bad UTF-8, frames before the 101) and see exactly what comes back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from typing import Any

import pytest
from pusher_helpers import APP_KEY, QUERY, TIMEOUT

from tidings.protocol.websocket import unmask

pytestmark = pytest.mark.timeout(6 * TIMEOUT)

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x9e\x04\x51\xc2"  # fixed, so parametrized frames are the same on every worker


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return header + payload
    return header + MASK + unmask(payload, MASK)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawSocket:
    """A WebSocket client that writes bytes and reads server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, early: bytes = b"", extensions: str = "") -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /app/{APP_KEY}?{QUERY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
            + "\r\n"
        )
        writer.write(request.encode() + early)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        sock = cls(reader, writer)
        sock.head = head.decode()
        expected = base64.b64encode(
            hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        ).decode()
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert f"Sec-WebSocket-Accept: {expected}".lower() in sock.head.lower(), head
        return sock

    head: str

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); server frames are never masked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        assert not second & 0x80, "a server frame is never masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def message(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == TEXT, (opcode, payload)
        message: dict[str, Any] = json.loads(payload)
        return message

    async def closed_by_server(self) -> bool:
        """True once the server has closed the TCP connection."""
        return await asyncio.wait_for(self.reader.read(), 2 * TIMEOUT) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def connect(server: Any) -> Any:
    opened: list[RawSocket] = []

    async def factory(early: bytes = b"", extensions: str = "") -> RawSocket:
        sock = await RawSocket.open(server.port, early, extensions)
        opened.append(sock)
        return sock

    yield factory
    for sock in opened:
        sock.close()


async def established(sock: RawSocket) -> None:
    greeting = await sock.message()
    assert greeting["event"] == "pusher:connection_established"


PUSHER_PING = json.dumps({"event": "pusher:ping", "data": {}}).encode()


async def test_handshake_negotiates_no_extension(connect: Any) -> None:
    # permessage-deflate stays off: each subscriber would compress the same message again.
    sock = await connect(extensions="permessage-deflate; client_max_window_bits")
    assert "sec-websocket-extensions" not in sock.head.lower()
    await established(sock)


async def test_frames_sent_with_the_upgrade_request_are_read(connect: Any) -> None:
    sock = await connect(early=frame(TEXT, PUSHER_PING))
    await established(sock)
    assert (await sock.message())["event"] == "pusher:pong"


async def test_fragmented_message_with_a_ping_between_fragments(connect: Any) -> None:
    sock = await connect()
    await established(sock)
    sock.send(
        frame(TEXT, PUSHER_PING[:5], fin=False)
        + frame(PING, b"hello")
        + frame(0x0, PUSHER_PING[5:12], fin=False)
        + frame(0x0, PUSHER_PING[12:])
    )
    # RFC 6455 5.5.3: the pong echoes the ping's payload, even inside a fragmented message.
    assert await sock.frame() == (PONG, b"hello")
    assert (await sock.message())["event"] == "pusher:pong"


async def test_client_close_is_answered_with_its_code_then_the_socket_closes(
    connect: Any,
) -> None:
    sock = await connect()
    await established(sock)
    sock.send(frame(CLOSE, close_payload(1001, b"going away")))
    assert await sock.frame() == (CLOSE, close_payload(1001))
    assert await sock.closed_by_server()


async def test_close_without_a_code_is_answered_1000(connect: Any) -> None:
    sock = await connect()
    await established(sock)
    sock.send(frame(CLOSE, b""))
    assert await sock.frame() == (CLOSE, close_payload(1000))
    assert await sock.closed_by_server()


async def test_server_close_is_dropped_when_the_client_never_answers(connect: Any) -> None:
    sock = await connect()
    await established(sock)
    signin = {"event": "pusher:signin", "data": {"auth": "app-key:bad", "user_data": "{}"}}
    sock.send(frame(TEXT, json.dumps(signin).encode()))
    opcode, payload = await sock.frame()
    while opcode == TEXT:  # the pusher:error before the close
        opcode, payload = await sock.frame()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 4009
    # No close frame back: the server ends the handshake by itself.
    assert await sock.closed_by_server()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b'{"event":"\xff"}'), 1007),  # not UTF-8
        (frame(TEXT, PUSHER_PING, masked=False), 1002),  # RFC 6455 5.1: must be masked
        (frame(PING, b"x" * 126), 1002),  # control frames carry at most 125 bytes
        (frame(0x0, b"{}"), 1002),  # continuation of nothing
        # 1009 from the second fragment's header: the app allows 32 KiB per message.
        (frame(TEXT, b" " * 20000, fin=False) + frame(0x0, b" " * 20000), 1009),
    ],
    ids=["bad-utf8", "unmasked", "long-ping", "lone-continuation", "oversized-fragments"],
)
async def test_protocol_violations_close_with_the_rfc_code(
    connect: Any, data: bytes, code: int
) -> None:
    sock = await connect()
    await established(sock)
    sock.send(data)
    opcode, payload = await sock.frame()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == code, payload
    assert await sock.closed_by_server()


async def test_binary_frame_gets_a_pusher_error_and_the_socket_stays(connect: Any) -> None:
    sock = await connect()
    await established(sock)
    sock.send(frame(BINARY, b"\x00\x01"))
    error = await sock.message()
    assert error["event"] == "pusher:error"
    sock.send(frame(TEXT, PUSHER_PING))
    assert (await sock.message())["event"] == "pusher:pong"


async def test_messages_are_answered_in_order(connect: Any) -> None:
    # Many messages in one write: each waits for the one before (reading paused meanwhile).
    sock = await connect()
    await established(sock)
    channels = [f"in-order-{i}" for i in range(20)]
    sock.send(
        b"".join(
            frame(TEXT, json.dumps({"event": "pusher:subscribe", "data": {"channel": c}}).encode())
            for c in channels
        )
    )
    answered = [(await sock.message())["channel"] for _ in channels]
    assert answered == channels


async def test_the_aiohttp_engine_is_still_selectable(make_server: Any) -> None:
    server = make_server(websocket_engine="aiohttp")
    sock = await RawSocket.open(server.port)
    try:
        await established(sock)
        sock.send(frame(PING, b"old"))
        assert await sock.frame() == (PONG, b"old")
    finally:
        sock.close()
