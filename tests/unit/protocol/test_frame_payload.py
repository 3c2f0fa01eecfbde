"""protocol/frames.py ``frame_payload``: the message inside a pre-built server frame.

The HTTP fallbacks receive the same WebSocket frame as every socket and take the payload
back out; every length encoding of RFC 6455 section 5.2 must round-trip.
"""

from __future__ import annotations

import pytest

from tidings.protocol.frames import frame_payload, frame_payloads, text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000])
def test_frame_payload_round_trips_every_length_encoding(length: int) -> None:
    payload = bytes(i % 251 for i in range(length))
    assert frame_payload(text_frame(payload)) == payload


def test_frame_payload_of_a_pusher_message() -> None:
    message = '{"event":"greet","channel":"c","data":"{\\"text\\":\\"héllo ✓\\"}"}'.encode()
    assert frame_payload(text_frame(message)) == message


def test_frame_payload_of_literal_frames() -> None:
    assert frame_payload(b"\x81\x03abc") == b"abc"
    assert frame_payload(b"\x81\x7e\x00\x7e" + b"y" * 126) == b"y" * 126
    assert frame_payload(b"\x81\x7f" + (65536).to_bytes(8, "big") + b"z" * 65536) == b"z" * 65536


def test_frame_payloads_splits_joined_frames() -> None:
    messages = [b"a", b"y" * 126, b"z" * 70_000, b"{}"]
    joined = b"".join(text_frame(m) for m in messages)
    assert frame_payloads(joined) == messages
    assert frame_payloads(text_frame(b"one")) == [b"one"]
    assert frame_payloads(b"") == []
