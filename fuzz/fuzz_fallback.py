"""Fuzz the HTTP fallback framing (``protocol/sockjs.py``) and what carries it.

Contract: ``sockjs.parse_send`` (an ``xhr_send`` body) returns a list of strings or raises
:class:`ProtocolError`; each message then goes through ``Session.receive``, which never
raises. Invariants: the ``a[...]`` frame built for a batch of messages carries exactly those
messages; ``c[code,"reason"]`` carries its code and reason; every WebSocket text frame
carries its payload whole behind a header of the length RFC 6455 5.2 gives it; close
frames stay within RFC 6455's 125 bytes with a reason that is still valid UTF-8.
"""

from __future__ import annotations

import struct
import sys

import orjson
from reader import FuzzInput

from tidings.protocol import frames, sockjs
from tidings.protocol.errors import ProtocolError
from tidings.protocol.session import Session, SessionPolicy

POLICY = SessionPolicy("app-key", "app-secret")


def check_send(body: bytes) -> None:
    try:
        texts = sockjs.parse_send(body)
    except ProtocolError as exc:
        assert exc.code is None
        return
    assert isinstance(texts, list) and all(isinstance(t, str) for t in texts)
    assert len(texts) <= sockjs.MAX_SEND_MESSAGES
    session = Session("1.2", POLICY, 0.0)
    for i, text in enumerate(texts):
        session.receive(text, float(i))
    if texts:
        frame = sockjs.messages_frame([t.encode() for t in texts])
        assert frame[:1] == b"a" and frame[-1:] == b"\n"
        assert orjson.loads(frame[1:-1]) == texts


def check_frames(data: FuzzInput) -> None:
    code = 4000 + data.choice(400)
    reason = data.text()
    close = sockjs.close_frame(code, reason)
    assert close[:1] == b"c" and close[-1:] == b"\n" and close.count(b"\n") == 1
    assert orjson.loads(close[1:-1]) == [code, reason]
    ws_close = frames.close_frame(code, reason)
    payload = ws_close[2:]
    assert ws_close[0] == 0x88 and ws_close[1] == len(payload) <= 125
    assert struct.unpack("!H", payload[:2])[0] == code
    assert reason.startswith(payload[2:].decode("utf-8"))
    message = data.rest()
    # Lengths around the 7-bit / 16-bit / 64-bit boundaries of RFC 6455 5.2.
    for size in (len(message), 125, 126, 65535, 65536):
        body = (message * (size // max(1, len(message)) + 1))[:size] if message else b"x" * size
        frame = frames.text_frame(body)
        header = frames.text_frame_size(size) - size
        assert len(frame) == header + size and frame[header:] == body
        assert frame[0] == 0x81 and {2: size, 4: 126, 10: 127}[header] == frame[1]


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    if data.choice(4) == 0:
        check_frames(data)
        return
    body = data.rest()
    check_send(body)
    if body[:1] != b"[":
        check_send(b"[" + body + b"]")


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
