"""Fuzz the client frame readers (``protocol/websocket.py`` and its C twin ``_wsframe.c``).

Contract, for both: ``feed`` never raises; it returns Text, Binary, Ping, Pong,
CloseReceived or Failed events, nothing after a CloseReceived or a Failed, no message over
the limit, control payloads of at most 125 bytes. Invariants: how the bytes are split across
reads never changes the events; a message framed, masked and fragmented as a client would is
read back as sent. Oracle: the C reader returns exactly the Python reader's events, for
any bytes in any read sizes (atheris follows the Python reader's branches; the C one is
compared on every input).
"""

from __future__ import annotations

import struct
import sys

from reader import FuzzInput

from tidings.protocol.websocket import (
    Binary,
    CloseReceived,
    Event,
    Failed,
    NativeFrameReader,
    Ping,
    Pong,
    PyFrameReader,
    Text,
    unmask,
)

LIMIT = 512
READERS = [PyFrameReader] if NativeFrameReader is None else [PyFrameReader, NativeFrameReader]


def feed_in_chunks(reader_class: type[PyFrameReader], data: bytes, sizes: list[int]) -> list[Event]:
    reader = reader_class(LIMIT)
    events: list[Event] = []
    pos = 0
    for size in sizes or [len(data)]:
        events += reader.feed(data[pos : pos + size])
        pos += size
    events += reader.feed(data[pos:])
    return events


def check_events(events: list[Event]) -> None:
    for i, event in enumerate(events):
        assert isinstance(event, Text | Binary | Ping | Pong | CloseReceived | Failed), event
        if isinstance(event, CloseReceived | Failed):
            assert i == len(events) - 1, "nothing is read after a close or a failure"
        if isinstance(event, Failed):
            assert event.code in (1002, 1007, 1009), event
        if isinstance(event, Text):
            assert len(event.data.encode()) <= LIMIT
        if isinstance(event, Binary):
            assert len(event.data) <= LIMIT
        if isinstance(event, Ping | Pong):
            assert len(event.data) <= 125


def client_frame(opcode: int, payload: bytes, fin: bool, mask: bytes) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + mask + unmask(payload, mask)


def check_round_trip(data: FuzzInput) -> None:
    binary = data.flag()
    payload = data.chunk() if binary else data.unicode_text().encode()
    payload = payload[:LIMIT]
    if not binary:
        payload = payload.decode("utf-8", "ignore").encode()  # cut inside a character
    mask = bytes(data.byte() for _ in range(4))
    cuts = sorted({data.byte() % (len(payload) + 1) for _ in range(data.choice(4))})
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    wire = b"".join(
        client_frame(0x0 if i else (0x2 if binary else 0x1), piece, i == len(pieces) - 1, mask)
        for i, piece in enumerate(pieces)
    )
    expected = Binary(payload) if binary else Text(payload.decode())
    for reader_class in READERS:
        assert reader_class(LIMIT).feed(wire) == [expected], reader_class


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    if data.choice(2):
        check_round_trip(data)
        return
    sizes = [data.byte() + 1 for _ in range(data.choice(8))]
    wire = data.rest()
    python = feed_in_chunks(PyFrameReader, wire, sizes)
    check_events(python)
    assert python == PyFrameReader(LIMIT).feed(wire), "splitting reads changed the events"
    if NativeFrameReader is not None:
        native = feed_in_chunks(NativeFrameReader, wire, sizes)
        assert native == python, "the C reader differs from the Python one"
        assert [type(e) for e in native] == [type(e) for e in python]
        assert native == NativeFrameReader(LIMIT).feed(wire), "splitting reads changed C's"


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
