"""Server-to-client WebSocket frames, built once and written to many sockets.

RFC 6455 section 5.2: a server frame is unmasked, so the same bytes serve every
recipient. Only single-frame (FIN) frames are built here.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 0x1 (text)
_BINARY = 0x82  # FIN + opcode 0x2 (binary)
_CLOSE = 0x88  # FIN + opcode 0x8 (close)
_PONG = 0x8A  # FIN + opcode 0xA (pong)


def _header(first: int, length: int) -> bytes:
    # RFC 6455 5.2: 7-bit length, or 126 + 16-bit, or 127 + 64-bit; no mask bit.
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame_size(length: int) -> int:
    """The size of :func:`text_frame` of a ``length``-byte payload, without building it."""
    return length + (2 if length < 126 else 4 if length < 1 << 16 else 10)


def text_frame(payload: bytes) -> bytes:
    """One unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return _header(_TEXT, len(payload)) + payload


def binary_frame(payload: bytes) -> bytes:
    """One unmasked binary frame (the conformance echo; Pusher itself sends none)."""
    return _header(_BINARY, len(payload)) + payload


def pong_frame(payload: bytes) -> bytes:
    """RFC 6455 5.5.3: the answer to a ping carries the ping's payload (<= 125 bytes)."""
    return _header(_PONG, len(payload)) + payload


def close_reason(reason: str) -> bytes:
    """At most 123 bytes of UTF-8, never cut inside a character (RFC 6455 5.5.1)."""
    return reason.encode()[:123].decode("utf-8", "ignore").encode()


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; RFC 6455 5.5: control frame payloads are at most 125 bytes."""
    payload = struct.pack("!H", code) + close_reason(reason)
    return _header(_CLOSE, len(payload)) + payload
