"""protocol/websocket.py: client frames in, events out (RFC 6455, server side).

Every test runs against both readers: the pure-Python one and the C one (``_wsframe.c``)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol import websocket
from tidings.protocol.websocket import (
    Binary,
    CloseReceived,
    Failed,
    Ping,
    Pong,
    PyFrameReader,
    Text,
    unmask,
)

MASK = b"\x37\xfa\x21\x3d"
READERS: dict[str, type[PyFrameReader]] = {"python": PyFrameReader}
if websocket.NativeFrameReader is not None:
    READERS["native"] = websocket.NativeFrameReader


def test_the_native_reader_is_built_and_the_default() -> None:
    """`make install` builds tidings._wsframe with the machine's gcc: it must be there."""
    assert websocket.NativeFrameReader is not None, websocket.describe()
    forced = os.environ.get("TIDINGS_WS_READER") == "python"
    assert websocket.FrameReader is (PyFrameReader if forced else websocket.NativeFrameReader)


def test_the_switch_forces_the_python_reader_and_rejects_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    native = websocket.NativeFrameReader
    monkeypatch.setenv("TIDINGS_WS_READER", "python")
    assert websocket._chosen_reader(native) is PyFrameReader
    monkeypatch.setenv("TIDINGS_WS_READER", "native")
    assert websocket._chosen_reader(native) is (native or PyFrameReader)
    assert websocket._chosen_reader(None) is PyFrameReader  # not built: Python, whatever is set
    monkeypatch.setenv("TIDINGS_WS_READER", "c")
    with pytest.raises(ValueError, match="TIDINGS_WS_READER must be 'native' or 'python', not 'c'"):
        websocket._chosen_reader(native)


@pytest.fixture(scope="module", params=sorted(READERS))
def FrameReader(request: pytest.FixtureRequest) -> type[PyFrameReader]:  # noqa: N802 - a class
    return READERS[request.param]


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


def test_rfc_example_masked_hello(FrameReader: type[PyFrameReader]) -> None:
    # RFC 6455 5.7: a single-frame masked text message containing "Hello".
    data = bytes.fromhex("818537fa213d7f9f4d5158")
    assert FrameReader(1024).feed(data) == [Text("Hello")]


def test_messages_in_one_read_and_split_across_reads(FrameReader: type[PyFrameReader]) -> None:
    data = frame(0x1, b"one") + frame(0x2, b"\x00\xff") + frame(0x1, "é".encode())
    assert FrameReader(1024).feed(data) == [Text("one"), Binary(b"\x00\xff"), Text("é")]
    reader = FrameReader(1024)
    events = [e for byte in data for e in reader.feed(bytes([byte]))]
    assert events == [Text("one"), Binary(b"\x00\xff"), Text("é")]


def test_reads_given_as_bytearrays_keep_a_partial_frame(
    FrameReader: type[PyFrameReader],
) -> None:
    """A read handed over as a bytearray (a buffered protocol's buffer, which its owner
    reuses) that ends inside a frame: the partial frame is kept, the caller's object is
    neither kept nor changed."""
    first = frame(0x1, b"first")
    data = first + frame(0x1, b"second")
    cut = len(first) + 2  # all of "first" and the next frame's 2-byte header
    reader = FrameReader(1024)
    head = bytearray(data[:cut])
    assert reader.feed(head) == [Text("first")]
    assert head == data[:cut]
    head[:] = b"\x00" * len(head)  # the owner reuses its buffer
    assert reader.feed(bytearray(data[cut:])) == [Text("second")]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_extended_lengths(size: int, FrameReader: type[PyFrameReader]) -> None:
    payload = b"x" * size
    assert FrameReader(1 << 20).feed(frame(0x1, payload)) == [Text(payload.decode())]


def test_fragmented_text_with_a_ping_between_fragments(FrameReader: type[PyFrameReader]) -> None:
    data = (
        frame(0x1, b"Hel", fin=False)
        + frame(0x9, b"are you there")
        + frame(0x0, b"lo ", fin=False)
        + frame(0x0, "wörld".encode())
    )
    assert FrameReader(1024).feed(data) == [Ping(b"are you there"), Text("Hello wörld")]


def test_a_character_split_between_fragments_is_valid(FrameReader: type[PyFrameReader]) -> None:
    snowman = "☃".encode()
    data = frame(0x1, snowman[:1], fin=False) + frame(0x0, snowman[1:])
    assert FrameReader(1024).feed(data) == [Text("☃")]


def test_pong_and_empty_ping(FrameReader: type[PyFrameReader]) -> None:
    assert FrameReader(1024).feed(frame(0xA, b"p") + frame(0x9, b"")) == [Pong(b"p"), Ping(b"")]


def test_close_with_code_and_reason_ends_reading(FrameReader: type[PyFrameReader]) -> None:
    reader = FrameReader(1024)
    data = frame(0x8, struct.pack("!H", 1000) + b"bye") + frame(0x1, b"after")
    assert reader.feed(data) == [CloseReceived(1000, "bye")]
    assert reader.feed(frame(0x1, b"later")) == []


def test_empty_close_means_no_status(FrameReader: type[PyFrameReader]) -> None:
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
def test_protocol_violations_fail_with_the_rfc_code(
    data: bytes, code: int, FrameReader: type[PyFrameReader]
) -> None:
    reader = FrameReader(1 << 20)
    events = reader.feed(data)
    assert isinstance(events[-1], Failed) and events[-1].code == code, events
    assert reader.feed(frame(0x1, b"ignored")) == []


def test_bad_utf8_in_a_fragment_fails_before_the_message_ends(
    FrameReader: type[PyFrameReader],
) -> None:
    reader = FrameReader(1024)
    events = reader.feed(frame(0x1, b"ok \xff", fin=False))
    assert isinstance(events[0], Failed) and events[0].code == 1007


@pytest.mark.parametrize(
    ("fragments", "failed_at"),
    [
        ([b"\xed\xa0", b"\x80"], 1),  # a surrogate: CPython's decoder waits for its 3rd byte
        ([b"\xed\xa0", b""], 1),  # ... or for the end of the message
        ([b"\xed\x9f", b"\xbf"], None),  # U+D7FF, the last code point before them
        ([b"\xf4\x90", b"\x80\x80"], 0),  # past U+10FFFF: known from two bytes
        ([b"\xe0\x80", b"\x80"], 0),  # overlong
    ],
)
def test_utf8_across_fragments_fails_on_the_same_frame_as_cpython(
    FrameReader: type[PyFrameReader], fragments: list[bytes], failed_at: int | None
) -> None:
    reader = FrameReader(1024)
    for i, piece in enumerate(fragments):
        last = i == len(fragments) - 1
        events = reader.feed(frame(0x1 if i == 0 else 0x0, piece, fin=last))
        if i == failed_at:
            assert events == [Failed(1007, "invalid UTF-8 in a text message")]
            return
        assert events == ([Text(b"".join(fragments).decode())] if last else [])
    assert failed_at is None


def test_a_message_of_exactly_the_limit_passes_one_more_byte_fails(
    FrameReader: type[PyFrameReader],
) -> None:
    assert FrameReader(10).feed(frame(0x1, b"x" * 10)) == [Text("x" * 10)]
    events = FrameReader(10).feed(frame(0x1, b"x" * 11))
    assert events == [Failed(1009, "message too big")]


def test_the_limit_counts_every_fragment_and_fails_from_the_header(
    FrameReader: type[PyFrameReader],
) -> None:
    reader = FrameReader(10)
    assert reader.feed(frame(0x1, b"x" * 6, fin=False)) == []
    # Only the header of the second fragment has arrived: the verdict needs no payload.
    header = frame(0x0, b"y" * 5)[:6]
    assert reader.feed(header) == [Failed(1009, "message too big")]


def test_a_huge_declared_length_is_never_buffered(FrameReader: type[PyFrameReader]) -> None:
    header = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 40) + MASK
    assert FrameReader(1 << 20).feed(header) == [Failed(1009, "message too big")]


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_its_own_inverse(payload: bytes, mask: bytes) -> None:
    assert unmask(unmask(payload, mask), mask) == payload
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5), st.integers(1, 7))
def test_any_fragmentation_and_read_size_gives_the_message(
    FrameReader: type[PyFrameReader], parts: list[str], chunk: int
) -> None:
    data = b"".join(
        frame(0x1 if i == 0 else 0x0, p.encode(), fin=i == len(parts) - 1)
        for i, p in enumerate(parts)
    )
    reader = FrameReader(1 << 16)
    events = [e for i in range(0, len(data), chunk) for e in reader.feed(data[i : i + chunk])]
    assert events == [Text("".join(parts))]


# -- the C reader against the Python one: same events for any bytes, any read sizes --------

OPCODES = st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB])
TEXTISH = st.one_of(
    st.text(max_size=60).map(str.encode),
    st.binary(max_size=60),
    st.lists(st.sampled_from([b"\xe2", b"\x98", b"\x83", b"\xed\xa0", b"\xf4\x90", b"a"])).map(
        b"".join
    ),
)


@st.composite
def client_streams(draw: st.DrawFn) -> bytes:
    """Mostly well-formed client frames with random opcodes, FIN bits, lengths and payloads
    (close codes, UTF-8 cut anywhere), now and then a raw byte string."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.binary(max_size=20)))
            continue
        opcode = draw(OPCODES)
        payload = draw(TEXTISH)
        if opcode == 0x8 and payload and draw(st.booleans()):
            code = draw(st.sampled_from([1000, 1001, 1004, 1005, 1007, 2999, 3000, 4999, 5000]))
            payload = struct.pack("!H", code) + payload[:100]
        if draw(st.integers(0, 20)) == 0:
            payload = payload * 300  # a 16-bit length, or past the limit
        mask = draw(st.sampled_from([MASK, b"\x00\x00\x00\x00", None]))
        parts.append(frame(opcode, payload, fin=draw(st.booleans()), mask=mask))
    return b"".join(parts)


def feed_in(reader: PyFrameReader, data: bytes, sizes: list[int]) -> list[object]:
    events: list[object] = []
    pos = 0
    for size in sizes:
        events += reader.feed(data[pos : pos + size])
        pos += size
    return events + reader.feed(data[pos:])


needs_native = pytest.mark.skipif("native" not in READERS, reason="tidings._wsframe not built")


@needs_native
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(client_streams(), st.lists(st.integers(1, 40), max_size=8), st.integers(0, 300))
def test_native_and_python_readers_agree(data: bytes, sizes: list[int], limit: int) -> None:
    native = feed_in(READERS["native"](limit), data, sizes)
    python = feed_in(PyFrameReader(limit), data, sizes)
    assert native == python
    assert [type(e) for e in native] == [type(e) for e in python]


@needs_native
@given(st.binary(max_size=200), st.lists(st.integers(1, 16), max_size=8))
def test_native_and_python_readers_agree_on_any_bytes(data: bytes, sizes: list[int]) -> None:
    assert feed_in(READERS["native"](64), data, sizes) == feed_in(PyFrameReader(64), data, sizes)


@pytest.mark.parametrize("limit", [-1, 0, 1 << 70])
def test_a_limit_outside_64_bits_still_holds(FrameReader: type[PyFrameReader], limit: int) -> None:
    events = FrameReader(limit).feed(frame(0x1, b"x"))
    assert events == ([Text("x")] if limit > 0 else [Failed(1009, "message too big")])


def test_a_big_message_in_many_reads(FrameReader: type[PyFrameReader]) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, fragmented in 3 frames, read 1,000 bytes at a time
    data = (
        frame(0x2, payload[:1000], fin=False)
        + frame(0x0, payload[1000:500_000], fin=False)
        + frame(0x0, payload[500_000:])
    )
    reader = FrameReader(1 << 20)
    events = [e for i in range(0, len(data), 1000) for e in reader.feed(data[i : i + 1000])]
    assert events == [Binary(payload)]
