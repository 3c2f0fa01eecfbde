"""Fuzz the lean REST path's framer (``protocol/http1.py``).

Contract: ``PublishFramer.next`` never raises; it returns hot requests, ``NEED_DATA`` or a
final ``HandOver``, and a request's body is never over the limit. Invariants: how the bytes
are split across reads changes neither the requests nor whether and where a hand-over is;
the bytes framed as requests and the bytes left for the general server add up to the input,
in order (a hand-over is at a request's first byte); a hot request built from fuzzed parts
is framed back as built.
"""

from __future__ import annotations

import sys

from reader import FuzzInput

from tidings.protocol.http1 import NEED_DATA, HandOver, PublishFramer, PublishRequest

LIMIT = 512
Event = PublishRequest | HandOver


def frame(data: bytes, sizes: list[int]) -> tuple[list[Event], bytes]:
    """The events, and the bytes the general server would read (the framer's unconsumed
    ones and those never fed to it)."""
    framer = PublishFramer(LIMIT)
    events: list[Event] = []
    pos = 0
    for size in [*sizes, len(data)]:
        framer.receive(data[pos : pos + size])
        pos += size
        while (event := framer.next()) is not NEED_DATA:
            assert isinstance(event, PublishRequest | HandOver), event
            events.append(event)
            if isinstance(event, HandOver):
                assert framer.next() is event, "a hand-over is final"
                return events, framer.unconsumed() + data[pos:]
        if pos >= len(data):
            break
    return events, framer.unconsumed()


def check_events(data: bytes, events: list[Event], left: bytes) -> None:
    requests = [e for e in events if isinstance(e, PublishRequest)]
    assert all(isinstance(e, HandOver) for e in events[len(requests) :])
    for request in requests:
        assert len(request.body) <= LIMIT
        assert request.path == f"/apps/{request.app_id}/{request.endpoint}"
    # What was framed is a prefix of the input, and the rest is what is left unconsumed.
    assert data.endswith(left)
    consumed = data[: len(data) - len(left)]
    for request in requests:
        assert request.body in consumed
    if events and isinstance(events[-1], HandOver):
        assert left, "a hand-over leaves the request's first byte"


def hot_request(data: FuzzInput) -> tuple[bytes, PublishRequest]:
    endpoint = "events" if data.flag() else "batch_events"
    app_id = "".join(c for c in data.text() if c.isascii() and (c.isalnum() or c in "_.~-"))
    app_id = app_id or "1"
    query = "&".join(f"q{i}={data.byte()}" for i in range(data.choice(4)))
    body = data.chunk()[:LIMIT]
    close = data.flag()
    headers = [("host", "h"), ("content-length", str(len(body)))]
    if close:
        headers.append(("connection", "close"))
    path = f"/apps/{app_id}/{endpoint}"
    target = f"{path}?{query}" if query else path
    head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    expected = PublishRequest(
        endpoint=endpoint,  # type: ignore[arg-type]
        app_id=app_id,
        path=path,
        query_items=[(f"q{i}", v) for i, v in enumerate(p.split("=")[1] for p in query.split("&"))]
        if query
        else [],
        headers=headers,
        body=body,
        keep_alive=not close,
    )
    return head.encode() + b"\r\n" + body, expected


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    if data.choice(2):
        wire, expected = hot_request(data)
        events, _ = frame(wire, [])
        assert events == [expected], (events, expected)
        return
    sizes = [data.byte() + 1 for _ in range(data.choice(8))]
    wire = data.rest()
    events, left = frame(wire, sizes)
    check_events(wire, events, left)
    whole, whole_left = frame(wire, [])
    # (A hand-over's reason may name what the bytes read so far showed.)
    assert shape(events) == shape(whole), "splitting reads changed the events"
    assert left == whole_left


def shape(events: list[Event]) -> list[object]:
    return [e if isinstance(e, PublishRequest) else HandOver for e in events]


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
