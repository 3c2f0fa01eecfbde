"""protocol/frames.py: unmasked server frames (RFC 6455 section 5.2)."""

from __future__ import annotations

import struct

import pytest

from tidings.protocol.frames import close_frame, text_frame


def test_empty_text_frame() -> None:
    assert text_frame(b"") == b"\x81\x00"


def test_short_text_frame() -> None:
    assert text_frame(b'{"event":"x"}') == b'\x81\x0d{"event":"x"}'


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_length_encodings(length: int, header: bytes) -> None:
    payload = b"x" * length
    assert text_frame(payload) == header + payload


def test_frames_are_never_masked() -> None:
    for length in (0, 1, 200, 70000):
        assert text_frame(b"a" * length)[1] & 0x80 == 0


def test_close_frame() -> None:
    assert close_frame(4009, "bye") == b"\x88\x05\x0f\xa9bye"
    assert close_frame(1000) == b"\x88\x02\x03\xe8"


def test_close_reason_truncated_to_control_frame_limit() -> None:
    frame = close_frame(4200, "x" * 500)
    assert frame[1] == 125  # RFC 6455 5.5: control frame payload at most 125 bytes
    assert struct.unpack("!H", frame[2:4]) == (4200,)
    assert frame[4:] == b"x" * 123


def test_close_reason_truncation_keeps_valid_utf8() -> None:
    """RFC 6455 5.5.1: the close reason must be valid UTF-8, even when truncated."""
    frame = close_frame(4009, "é" * 70)  # 140 bytes; cut at 123 splits a character
    assert len(frame) <= 2 + 125
    frame[4:].decode("utf-8")
