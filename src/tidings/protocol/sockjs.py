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

A session is named by the client: ``{server}/{session}``, pusher-js picks a random integer
0-999 and 8 random base-32 characters (``http_socket.ts``). The name is the session's only
credential, so anything of another shape is refused before it reaches a session table.
"""

from __future__ import annotations

import re

import orjson

from tidings.protocol.errors import ProtocolError

OPEN = b"o\n"
HEARTBEAT = b"h\n"
# 2 KiB of "h" before anything else makes buffering proxies and old browsers start
# delivering a streaming response; pusher-js reads it as a heartbeat.
PRELUDE = b"h" * 2048 + b"\n"
MAX_SEND_MESSAGES = 100

# SockJS's answer to a second receive request on a session that already has one. pusher-js
# reads any c[...] as a clean close; a code below 4000 other than 1002-1004 means "reconnect
# (new session) in a second" and costs the transport none of its lives.
ANOTHER_RECEIVER_CODE = 2010
ANOTHER_RECEIVER_REASON = "Another connection still open"

# pusher-js aborts a streaming response and opens the next one on the same session once the
# response text is longer than this (http_request.ts MAX_BUFFER_LENGTH, in JavaScript string
# length: UTF-16 code units) and ends on a frame boundary.
CLIENT_BUFFER_LIMIT = 256 * 1024

SERVER_ID = re.compile(r"[0-9]{1,3}")
REQUEST_NUMBER = re.compile(r"[0-9]{1,15}")  # pusher-js's counter: a JavaScript integer
SESSION_ID = re.compile(r"[0-9A-Za-z]{8,32}")  # pusher-js: 8; short ones are guessable


def messages_frame(messages: list[bytes]) -> bytes:
    """``a[...]`` carrying each JSON message as a string."""
    return b"a" + orjson.dumps([m.decode() for m in messages]) + b"\n"


def close_frame(code: int, reason: str) -> bytes:
    return b"c" + orjson.dumps([code, reason]) + b"\n"


def session_name_error(server: str, session: str) -> str | None:
    """Why ``{server}/{session}`` cannot be a pusher-js session name, or None."""
    if not SERVER_ID.fullmatch(server):
        return "the server id of a session must be 1 to 3 digits"
    if not SESSION_ID.fullmatch(session):
        return "the session id must be 8 to 32 letters or digits"
    return None


def request_number(value: str | None) -> int | None:
    """The ``n`` query parameter pusher-js puts on every request of a page (one counter,
    incremented per request: ``http_socket.ts`` ``getUniqueURL``), or None when there is no
    such number."""
    if value is None or not REQUEST_NUMBER.fullmatch(value):
        return None
    return int(value)


def text_length(data: bytes) -> int:
    """How long ``data`` (UTF-8) is as a JavaScript string: pusher-js's buffer measure."""
    if data.isascii():
        return len(data)
    return len(data.decode("utf-8", errors="replace").encode("utf-16-le")) // 2


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
