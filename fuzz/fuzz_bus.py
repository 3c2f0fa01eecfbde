"""Fuzz what a node reads from the Redis bus: publications (plain and positioned) and control
messages (``brokers/bus.py``).

Contract: anyone who can reach Redis can publish anything, so ``decode_publication`` and
``decode_control`` either return what a node writes or raise :class:`Dropped`, never anything
else. Invariants: a decoded publication carries a Pusher event and, if positioned, an offset
above 0 and an alphanumeric epoch; written back with the encoders it decodes to the same
publication; a decoded control message written back decodes to the same envelope.
"""

from __future__ import annotations

import sys

import orjson
from reader import FuzzInput

from tidings.brokers.bus import (
    Dropped,
    decode_control,
    decode_publication,
    encode_control,
    encode_positioned,
    encode_publication,
)

# What the fuzzer's bytes are put behind, so it spends its time past the headers too.
PREFIXES = (b"", b"node-1\x00\x00", b"node-1\x001.2\x00", b"\x01a1b2c3d4\x0017\x00n\x00\x00")


def check_publication(data: bytes) -> None:
    try:
        publication = decode_publication(data)
    except Dropped:
        return
    body = orjson.loads(publication.message)
    assert isinstance(body, dict) and isinstance(body.get("event"), str)
    position = publication.position
    if position is None:
        again = encode_publication(publication.origin, publication.exclude, publication.message)
    else:
        assert position.offset > 0 and position.epoch.isascii() and position.epoch.isalnum()
        again = encode_positioned(
            position, publication.origin, publication.exclude, publication.message
        )
    assert decode_publication(again) == publication


def check_control(data: bytes) -> None:
    try:
        envelope = decode_control(data)
    except Dropped:
        return
    again = encode_control(envelope.origin, envelope.app_id, envelope.message)
    assert decode_control(again) == envelope


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    prefix = PREFIXES[data.choice(len(PREFIXES))]
    rest = data.rest()
    check_publication(prefix + rest)
    check_control(rest)


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
