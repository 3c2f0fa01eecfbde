"""Fuzz the client frame reader (``protocol/websocket.py``).

Contract: ``FrameReader.feed`` never raises; it returns Text, Binary, Ping, Pong,
CloseReceived or Failed events, nothing after a CloseReceived or a Failed, no message over
the limit, control payloads of at most 125 bytes. Invariants: how the bytes are split across
reads never changes the events; a message framed, masked and fragmented as a client would is
read back as sent.
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
    FrameReader,
    Ping,
    Pong,
    Text,
    unmask,
)

LIMIT = 512


def feed_in_chunks(data: bytes, sizes: list[int]) -> list[Event]:
    reader = FrameReader(LIMIT)
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
    assert FrameReader(LIMIT).feed(wire) == [expected]


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    if data.choice(2):
        check_round_trip(data)
        return
    sizes = [data.byte() + 1 for _ in range(data.choice(8))]
    wire = data.rest()
    events = feed_in_chunks(wire, sizes)
    check_events(events)
    assert events == FrameReader(LIMIT).feed(wire), "splitting reads changed the events"


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
