"""Fuzz the lean REST path's framer (``protocol/http1.py``).

Contract: ``PublishFramer.next`` never raises; it returns hot requests, ``NEED_DATA`` or a
final ``HandOver`` (or, first, a final ``UpgradeRequest``, which leaves every byte for
whoever answers it), and a request's body is never over the limit. Invariants: how the bytes
are split across reads changes neither the requests nor whether and where a hand-over is;
the bytes framed as requests and the bytes left for the general server add up to the input,
in order (a hand-over is at a request's first byte); a hot request or an opening upgrade
built from fuzzed parts is framed back as built.
"""

from __future__ import annotations

import sys

from reader import FuzzInput

from tidings.protocol.http1 import (
    NEED_DATA,
    HandOver,
    PublishFramer,
    PublishRequest,
    UpgradeRequest,
)

LIMIT = 512
Event = PublishRequest | UpgradeRequest | HandOver
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def frame(data: bytes, sizes: list[int]) -> tuple[list[Event], bytes]:
    """The events, and the bytes the general server would read (the framer's unconsumed
    ones and those never fed to it)."""
    framer = PublishFramer(LIMIT, upgrades=True)
    events: list[Event] = []
    pos = 0
    for size in [*sizes, len(data)]:
        framer.receive(data[pos : pos + size])
        pos += size
        while (event := framer.next()) is not NEED_DATA:
            assert isinstance(event, Event), event
            events.append(event)
            if isinstance(event, UpgradeRequest):
                assert isinstance(framer.next(), HandOver), "an upgrade is final"
                assert framer.unconsumed().endswith(event.early)
                return events, framer.unconsumed() + data[pos:]
            if isinstance(event, HandOver):
                assert framer.next() is event, "a hand-over is final"
                return events, framer.unconsumed() + data[pos:]
        if pos >= len(data):
            break
    return events, framer.unconsumed()


def check_events(data: bytes, events: list[Event], left: bytes) -> None:
    if events and isinstance(events[0], UpgradeRequest):
        assert len(events) == 1 and left == data, "an upgrade opens a connection, consumes nothing"
        upgrade = events[0]
        assert upgrade.path == f"/app/{upgrade.app_key}"
        assert upgrade.websocket_key.endswith("==") and len(upgrade.websocket_key) == 24
        return
    requests = [e for e in events if isinstance(e, PublishRequest)]
    assert not any(isinstance(e, UpgradeRequest) for e in events), "only the first may upgrade"
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


def upgrade_request(data: FuzzInput) -> tuple[bytes, UpgradeRequest]:
    key = "".join(c for c in data.text() if c.isascii() and (c.isalnum() or c in "_~-")) or "k"
    query = "&".join(f"q{i}={data.byte()}" for i in range(data.choice(4)))
    origin = f"https://o{data.byte()}.example" if data.flag() else None
    headers = [
        ("Upgrade", "websocket" if data.flag() else "WebSocket"),
        ("Connection", "Upgrade" if data.flag() else "keep-alive, upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", WS_KEY),
    ]
    if origin is not None:
        headers.append(("Origin", origin))
    early = data.chunk()
    path = f"/app/{key}"
    target = f"{path}?{query}" if query else path
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    expected = UpgradeRequest(
        app_key=key,
        path=path,
        query_items=[(f"q{i}", p.split("=")[1]) for i, p in enumerate(query.split("&"))]
        if query
        else [],
        websocket_key=WS_KEY,
        origin=origin,
        early=early,
    )
    return head.encode() + b"\r\n" + early, expected


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    kind = data.choice(3)  # 0: raw bytes, 1: a hot request, 2: an opening upgrade
    if kind == 2:
        wire, expected_upgrade = upgrade_request(data)
        events, _ = frame(wire, [])
        assert events == [expected_upgrade], (events, expected_upgrade)
        return
    if kind == 1:
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
    # An upgrade's early bytes are what had been read with its head: they vary with the split.
    return [
        e
        if isinstance(e, PublishRequest)
        else e._replace(early=b"")
        if isinstance(e, UpgradeRequest)
        else HandOver
        for e in events
    ]


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
