"""The framing of pusher-js's HTTP fallbacks (``xhr_streaming``, ``xhr_polling``).

pusher-js speaks a subset of SockJS over plain HTTP: every receive response is a series of
newline-terminated frames whose first character is the type (pusher-js
``core/http/http_socket.ts``):

* ``o``: the session is open (must come first);
* ``a[...]``: a JSON array of strings, each one Pusher message;
* ``h``: heartbeat;
* ``c[code,"reason"]``: the session is closed.

The client sends with ``xhr_send``: a JSON array of strings, each one Pusher message;
``[]`` is its activity ping.
"""

from __future__ import annotations

import orjson

from tidings.protocol.errors import ProtocolError

OPEN = b"o\n"
HEARTBEAT = b"h\n"
# 2 KiB of "h" before anything else makes buffering proxies and old browsers start
# delivering a streaming response; pusher-js reads it as a heartbeat.
PRELUDE = b"h" * 2048 + b"\n"
MAX_SEND_MESSAGES = 100


def messages_frame(messages: list[bytes]) -> bytes:
    """``a[...]`` carrying each JSON message as a string."""
    return b"a" + orjson.dumps([m.decode() for m in messages]) + b"\n"


def close_frame(code: int, reason: str) -> bytes:
    return b"c" + orjson.dumps([code, reason]) + b"\n"


def parse_send(body: bytes) -> list[str]:
    """The messages of an ``xhr_send`` body, or :class:`ProtocolError`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError("xhr_send body is not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ProtocolError("xhr_send body must be a JSON array of strings")
    if len(value) > MAX_SEND_MESSAGES:
        raise ProtocolError(f"more than {MAX_SEND_MESSAGES} messages in one xhr_send")
    return value
