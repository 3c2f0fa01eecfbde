"""Server-to-client WebSocket frames, built once and written to many sockets.

RFC 6455 section 5.2: a server frame is unmasked, so the same bytes serve every
recipient. Only single-frame (FIN) text and close frames are built here.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 0x1 (text)
_CLOSE = 0x88  # FIN + opcode 0x8 (close)


def _header(first: int, length: int) -> bytes:
    # RFC 6455 5.2: 7-bit length, or 126 + 16-bit, or 127 + 64-bit; no mask bit.
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return _header(_TEXT, len(payload)) + payload


def close_reason(reason: str) -> bytes:
    """At most 123 bytes of UTF-8, never cut inside a character (RFC 6455 5.5.1)."""
    return reason.encode()[:123].decode("utf-8", "ignore").encode()


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; RFC 6455 5.5: control frame payloads are at most 125 bytes."""
    payload = struct.pack("!H", code) + close_reason(reason)
    return _header(_CLOSE, len(payload)) + payload


def frame_payload(frame: bytes) -> bytes:
    """The payload of a single unmasked frame built by :func:`text_frame`.

    Transports that are not WebSocket (the HTTP fallbacks) receive the same pre-built
    frame as every socket and take the message out of it.
    """
    length = frame[1] & 0x7F
    offset = 2 if length < 126 else 4 if length == 126 else 10
    return frame[offset:]


def frame_payloads(frames: bytes) -> list[bytes]:
    """The payloads of one or more unmasked frames built by :func:`text_frame`, joined
    back to back (the fan-out joins the frames of one tick into one buffer)."""
    payloads = []
    view = memoryview(frames)
    at, end = 0, len(frames)
    while at < end:
        length = view[at + 1] & 0x7F
        if length < 126:
            start = at + 2
        elif length == 126:
            start, length = at + 4, int.from_bytes(view[at + 2 : at + 4], "big")
        else:
            start, length = at + 10, int.from_bytes(view[at + 2 : at + 10], "big")
        payloads.append(bytes(view[start : start + length]))
        at = start + length
    return payloads
