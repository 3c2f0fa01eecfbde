"""protocol/websocket.py: client frames in, events out (RFC 6455, server side)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.websocket import (
    Binary,
    CloseReceived,
    Failed,
    FrameReader,
    Ping,
    Pong,
    Text,
    unmask,
)

MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = MASK) -> bytes:
    """A client frame: masked unless ``mask`` is None."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + unmask(payload, mask)


def test_rfc_example_masked_hello() -> None:
    # RFC 6455 5.7: a single-frame masked text message containing "Hello".
    data = bytes.fromhex("818537fa213d7f9f4d5158")
    assert FrameReader(1024).feed(data) == [Text("Hello")]


def test_messages_in_one_read_and_split_across_reads() -> None:
    data = frame(0x1, b"one") + frame(0x2, b"\x00\xff") + frame(0x1, "é".encode())
    assert FrameReader(1024).feed(data) == [Text("one"), Binary(b"\x00\xff"), Text("é")]
    reader = FrameReader(1024)
    events = [e for byte in data for e in reader.feed(bytes([byte]))]
    assert events == [Text("one"), Binary(b"\x00\xff"), Text("é")]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_extended_lengths(size: int) -> None:
    payload = b"x" * size
    assert FrameReader(1 << 20).feed(frame(0x1, payload)) == [Text(payload.decode())]


def test_fragmented_text_with_a_ping_between_fragments() -> None:
    data = (
        frame(0x1, b"Hel", fin=False)
        + frame(0x9, b"are you there")
        + frame(0x0, b"lo ", fin=False)
        + frame(0x0, "wörld".encode())
    )
    assert FrameReader(1024).feed(data) == [Ping(b"are you there"), Text("Hello wörld")]


def test_a_character_split_between_fragments_is_valid() -> None:
    snowman = "☃".encode()
    data = frame(0x1, snowman[:1], fin=False) + frame(0x0, snowman[1:])
    assert FrameReader(1024).feed(data) == [Text("☃")]


def test_pong_and_empty_ping() -> None:
    assert FrameReader(1024).feed(frame(0xA, b"p") + frame(0x9, b"")) == [Pong(b"p"), Ping(b"")]


def test_close_with_code_and_reason_ends_reading() -> None:
    reader = FrameReader(1024)
    data = frame(0x8, struct.pack("!H", 1000) + b"bye") + frame(0x1, b"after")
    assert reader.feed(data) == [CloseReceived(1000, "bye")]
    assert reader.feed(frame(0x1, b"later")) == []


def test_empty_close_means_no_status() -> None:
    assert FrameReader(1024).feed(frame(0x8, b"")) == [CloseReceived(1005, "")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x1, b"x", mask=None), 1002),  # 5.1: client frames are masked
        (bytes((0xC1, 0x80)) + MASK, 1002),  # RSV1 without an extension
        (frame(0x3, b""), 1002),  # reserved data opcode
        (frame(0xB, b""), 1002),  # reserved control opcode
        (frame(0x9, b"x", fin=False), 1002),  # fragmented ping
        (frame(0x9, b"x" * 126), 1002),  # control payload over 125
        (frame(0x0, b"x"), 1002),  # continuation with no message
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),  # new message inside one
        (frame(0x8, b"\x03"), 1002),  # one-byte close payload
        (frame(0x8, struct.pack("!H", 1006)), 1002),  # reserved close code
        (frame(0x8, struct.pack("!H", 999)), 1002),
        (frame(0x8, struct.pack("!H", 5000)), 1002),
        (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),  # reason not UTF-8
        (frame(0x1, b"\xce\xba\xe1\xbd"), 1007),  # truncated UTF-8
        (frame(0x1, b"\xed\xa0\x80"), 1007),  # a surrogate is not UTF-8
        (bytes((0x81, 0xFF)) + struct.pack("!Q", 1 << 63), 1002),  # 64-bit length, top bit
    ],
)
def test_protocol_violations_fail_with_the_rfc_code(data: bytes, code: int) -> None:
    reader = FrameReader(1 << 20)
    events = reader.feed(data)
    assert isinstance(events[-1], Failed) and events[-1].code == code, events
    assert reader.feed(frame(0x1, b"ignored")) == []


def test_bad_utf8_in_a_fragment_fails_before_the_message_ends() -> None:
    reader = FrameReader(1024)
    events = reader.feed(frame(0x1, b"ok \xff", fin=False))
    assert isinstance(events[0], Failed) and events[0].code == 1007


def test_a_message_of_exactly_the_limit_passes_one_more_byte_fails() -> None:
    assert FrameReader(10).feed(frame(0x1, b"x" * 10)) == [Text("x" * 10)]
    events = FrameReader(10).feed(frame(0x1, b"x" * 11))
    assert events == [Failed(1009, "message too big")]


def test_the_limit_counts_every_fragment_and_fails_from_the_header() -> None:
    reader = FrameReader(10)
    assert reader.feed(frame(0x1, b"x" * 6, fin=False)) == []
    # Only the header of the second fragment has arrived: the verdict needs no payload.
    header = frame(0x0, b"y" * 5)[:6]
    assert reader.feed(header) == [Failed(1009, "message too big")]


def test_a_huge_declared_length_is_never_buffered() -> None:
    header = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 40) + MASK
    assert FrameReader(1 << 20).feed(header) == [Failed(1009, "message too big")]


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_its_own_inverse(payload: bytes, mask: bytes) -> None:
    assert unmask(unmask(payload, mask), mask) == payload
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5), st.integers(1, 7))
def test_any_fragmentation_and_read_size_gives_the_message(parts: list[str], chunk: int) -> None:
    data = b"".join(
        frame(0x1 if i == 0 else 0x0, p.encode(), fin=i == len(parts) - 1)
        for i, p in enumerate(parts)
    )
    reader = FrameReader(1 << 16)
    events = [e for i in range(0, len(data), chunk) for e in reader.feed(data[i : i + chunk])]
    assert events == [Text("".join(parts))]
