"""core/publication.py: one run of messages, each encoding made once, in order."""

from __future__ import annotations

import json

import pytest

from tidings.core.publication import Publication
from tidings.protocol import messages
from tidings.protocol.frames import text_frame, text_frame_size


def event(name: str, size: int = 0) -> bytes:
    return messages.event(name, "news", json.dumps({"x": "é" * size}))


def parse_frames(data: bytes) -> list[bytes]:
    """Payloads of unmasked FIN text frames back to back (RFC 6455 5.2), read the way a
    client reads them, independently of protocol/frames.py."""
    payloads = []
    while data:
        assert data[0] == 0x81 and not data[1] & 0x80
        length, offset = data[1], 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        assert len(data) >= offset + length
        payloads.append(data[offset : offset + length])
        data = data[offset + length :]
    return payloads


def test_a_single_message_frames_as_one_text_frame() -> None:
    message = event("one")
    publication = Publication([message])
    assert publication.frame == text_frame(message)
    assert publication.texts == [message.decode()]
    assert publication.messages == [message]


def test_a_coalesced_run_keeps_publication_order_in_every_encoding() -> None:
    # Sizes across the three header forms (7-bit, 16-bit, 64-bit lengths), non-ASCII text.
    run = [event("a"), event("b", 100), event("c", 40_000), event("d")]
    publication = Publication(run)
    assert parse_frames(publication.frame) == run
    assert publication.texts == [message.decode() for message in run]
    assert [json.loads(t)["event"] for t in publication.texts] == ["a", "b", "c", "d"]
    assert publication.messages == run


@pytest.mark.parametrize("encoding", ["frame", "texts"])
def test_each_encoding_is_made_once_and_shared(encoding: str) -> None:
    publication = Publication([event("a"), event("b")])
    first = getattr(publication, encoding)
    # Every later recipient gets the very same object: nothing is encoded per recipient.
    assert all(getattr(publication, encoding) is first for _ in range(5))


def test_an_encoding_is_made_only_when_asked_for() -> None:
    """A fallback-only audience never pays for frames, a WebSocket one never for str."""
    publication = Publication([event("a")])
    assert publication.messages == [event("a")]
    assert publication._frame is None and publication._texts is None
    assert publication.texts == [event("a").decode()]
    assert publication._frame is None


@pytest.mark.parametrize("length", [0, 125, 126, 65_535, 65_536])
def test_size_is_the_frame_length_whether_or_not_it_was_built(length: int) -> None:
    run = [b"x" * length, b"y" * 3]
    unbuilt = Publication(run)
    assert unbuilt.size == len(text_frame(run[0])) + len(text_frame(run[1]))
    assert unbuilt._frame is None  # counting did not build the frame
    built = Publication(run)
    assert built.size == len(built.frame) == unbuilt.size
    assert text_frame_size(length) == len(text_frame(b"z" * length))


def test_positioned_is_made_once_and_only_when_there_are_offsets() -> None:
    plain = Publication([b'{"event":"a"}'])
    assert plain.positioned is plain
    publication = Publication([b'{"event":"a"}', b'{"event":"b"}'], [4, None])
    copy = publication.positioned
    assert copy is publication.positioned
    assert copy.messages == [b'{"event":"a","tidings":{"offset":4}}', b'{"event":"b"}']
    assert copy.offsets == [4, None]
    assert publication.messages == [b'{"event":"a"}', b'{"event":"b"}']  # untouched
