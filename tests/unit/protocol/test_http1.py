"""protocol/http1.py: the hot requests framed from literal bytes; everything else handed over."""

from __future__ import annotations

import pytest

from tidings.protocol.http1 import (
    MAX_HEAD,
    NEED_DATA,
    HandOver,
    Phase,
    PublishFramer,
    PublishRequest,
    UpgradeRequest,
    parse_query,
)

LIMIT = 1000
QUERY = "auth_key=k&auth_timestamp=1&auth_version=1.0&body_md5=x&auth_signature=s"


def hot(
    body: bytes = b'{"name":"e","channel":"c","data":"d"}',
    endpoint: str = "events",
    headers: str = "Host: 127.0.0.1\r\nContent-Type: application/json\r\n",
) -> bytes:
    return (
        f"POST /apps/1/{endpoint}?{QUERY} HTTP/1.1\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def framed(*chunks: bytes) -> tuple[list[PublishRequest | HandOver], PublishFramer]:
    framer = PublishFramer(LIMIT)
    events: list[PublishRequest | HandOver] = []
    for chunk in chunks:
        framer.receive(chunk)
        while True:
            event = framer.next()
            if event is NEED_DATA:
                break
            assert isinstance(event, PublishRequest | HandOver)
            events.append(event)
            if isinstance(event, HandOver):
                return events, framer
    return events, framer


def test_a_hot_request_is_framed_with_its_parts() -> None:
    [request], framer = framed(hot(endpoint="batch_events"))
    assert request == PublishRequest(
        endpoint="batch_events",
        app_id="1",
        path="/apps/1/batch_events",
        query_items=[
            ("auth_key", "k"),
            ("auth_timestamp", "1"),
            ("auth_version", "1.0"),
            ("body_md5", "x"),
            ("auth_signature", "s"),
        ],
        headers=[
            ("host", "127.0.0.1"),
            ("content-type", "application/json"),
            ("content-length", "37"),
        ],
        body=b'{"name":"e","channel":"c","data":"d"}',
        keep_alive=True,
    )
    assert framer.phase is Phase.IDLE and framer.unconsumed() == b""


def test_pipelined_requests_come_out_in_order_and_split_anywhere() -> None:
    wire = hot(b"1") + hot(b"22") + hot(b"333")
    whole, _ = framed(wire)
    assert [r.body for r in whole if isinstance(r, PublishRequest)] == [b"1", b"22", b"333"]
    for cut in range(1, len(wire)):
        split, _ = framed(wire[:cut], wire[cut:])
        assert split == whole, cut
    one_by_one, _ = framed(*(wire[i : i + 1] for i in range(len(wire))))
    assert one_by_one == whole


def test_phases_follow_the_request() -> None:
    wire = hot(b"12345")
    framer = PublishFramer(LIMIT)
    assert framer.phase is Phase.IDLE
    framer.receive(wire[:20])
    assert framer.next() is NEED_DATA and framer.phase is Phase.HEAD
    framer.receive(wire[20:-2])
    assert framer.next() is NEED_DATA and framer.phase is Phase.BODY
    assert framer.awaited_body == ("events", "1")
    framer.receive(wire[-2:])
    assert isinstance(framer.next(), PublishRequest)
    assert framer.phase is Phase.IDLE and framer.awaited_body is None


def test_connection_close_is_reported() -> None:
    [request], _ = framed(hot(headers="Connection: close\r\n"))
    assert isinstance(request, PublishRequest) and not request.keep_alive
    [request], _ = framed(hot(headers="Connection: keep-alive\r\n"))
    assert isinstance(request, PublishRequest) and request.keep_alive


def test_an_empty_query_and_blank_values() -> None:
    wire = b"POST /apps/1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    [request], _ = framed(wire)
    assert isinstance(request, PublishRequest) and request.query_items == []
    assert parse_query("a=1&&b=&c&d=x=y") == [("a", "1"), ("b", ""), ("c", ""), ("d", "x=y")]


HANDED_OVER = {
    "get": b"GET /apps/1/events HTTP/1.1\r\n\r\n",
    "websocket": b"GET /app/key?protocol=7 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    "other-post": b"POST /apps/1/channels HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "http-1.0": b"POST /apps/1/events HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    "percent-in-path": b"POST /apps/%31/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "plus-in-query": b"POST /apps/1/events?a=b+c HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "trailing-slash": b"POST /apps/1/events/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"GARBAGE\r\n\r\n",
    "lowercase-method": b"post /apps/1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunked": hot(headers="Transfer-Encoding: chunked\r\n"),
    "expect": hot(headers="Expect: 100-continue\r\n"),
    "upgrade": hot(headers="Upgrade: h2c\r\n"),
    "connection-upgrade": hot(headers="Connection: Upgrade\r\n"),
    "no-length": b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n\r\n",
    "two-lengths": hot(headers="Content-Length: 37\r\n"),
    "signed-length": b"POST /apps/1/events HTTP/1.1\r\nContent-Length: +1\r\n\r\n1",
    "space-before-colon": hot(headers="Host : x\r\n"),
    "obs-fold": hot(headers="X-A: a\r\n b\r\n"),
    "bare-lf-in-head": b"POST /apps/1/events HTTP/1.1\nContent-Length: 0\r\n\r\n",
    "control-byte": hot(headers="X-A: a\x01b\r\n"),
    "body-over-limit": hot(b"x" * (LIMIT + 1)),
}


@pytest.mark.parametrize("case", list(HANDED_OVER))
def test_anything_else_is_handed_over_from_its_first_byte(case: str) -> None:
    wire = HANDED_OVER[case]
    events, framer = framed(hot(b"first") + wire)
    assert isinstance(events[0], PublishRequest) and events[0].body == b"first"
    assert isinstance(events[-1], HandOver), events
    assert len(events) == 2
    assert framer.unconsumed() == wire  # the general server reads the request whole
    assert framer.next() == events[-1]  # final


def test_a_foreign_request_is_handed_over_before_its_head_is_complete() -> None:
    framer = PublishFramer(LIMIT)
    framer.receive(b"G")
    assert isinstance(framer.next(), HandOver)
    assert framer.unconsumed() == b"G"
    framer = PublishFramer(LIMIT)
    framer.receive(b"POST /apps/1/channels HTTP/1.1\r\nHo")
    assert isinstance(framer.next(), HandOver)


def test_a_head_too_large_is_handed_over() -> None:
    framer = PublishFramer(LIMIT)
    head = b"POST /apps/1/events HTTP/1.1\r\nX-A: " + b"a" * MAX_HEAD
    framer.receive(head)
    assert isinstance(framer.next(), HandOver)
    assert framer.unconsumed() == head
    framer = PublishFramer(LIMIT)
    framer.receive(hot(headers="X-A: " + "a" * MAX_HEAD + "\r\n"))
    assert isinstance(framer.next(), HandOver)


# -- the opening WebSocket upgrade -----------------------------------------------------------

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example
UPGRADE_HEADERS = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": WS_KEY,
    "Sec-WebSocket-Version": "13",
}


def upgrade(
    target: str = "/app/key-1?protocol=7&client=js", extra: str = "", **fields: str
) -> bytes:
    headers = {**UPGRADE_HEADERS, **{k.replace("_", "-"): v for k, v in fields.items()}}
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if value)
    return f"GET {target} HTTP/1.1\r\n{lines}{extra}\r\n".encode()


def upgraded(*chunks: bytes, upgrades: bool = True) -> UpgradeRequest | HandOver:
    framer = PublishFramer(LIMIT, upgrades=upgrades)
    event: object = NEED_DATA
    for chunk in chunks:
        framer.receive(chunk)
        event = framer.next()
    assert isinstance(event, UpgradeRequest | HandOver), event
    # Final either way, and the general server would get every byte.
    assert isinstance(framer.next(), HandOver)
    assert framer.unconsumed() == b"".join(chunks)
    return event


def test_the_opening_upgrade_is_framed_with_its_parts() -> None:
    request = upgraded(upgrade(extra="Origin: https://a.example\r\n") + b"\x81\x80early")
    assert request == UpgradeRequest(
        app_key="key-1",
        path="/app/key-1",
        query_items=[("protocol", "7"), ("client", "js")],
        websocket_key=WS_KEY,
        origin="https://a.example",
        early=b"\x81\x80early",
    )
    assert request.protocol == "7"


def test_an_upgrade_split_byte_by_byte_is_framed() -> None:
    data = upgrade(Upgrade="WebSocket", Connection="keep-alive, Upgrade")
    request = upgraded(*(data[i : i + 1] for i in range(len(data))))
    assert isinstance(request, UpgradeRequest)
    assert request.origin is None and request.protocol == "7"


def test_no_query_and_a_zero_length_body_are_plain() -> None:
    request = upgraded(upgrade("/app/k", extra="Content-Length: 0\r\n"))
    assert isinstance(request, UpgradeRequest) and request.query_items == []
    assert request.protocol is None


@pytest.mark.parametrize(
    "data",
    [
        upgrade("/app/k?protocol=7%20"),  # percent-encoding: the general server decodes it
        upgrade("/app/k?protocol=7+1"),
        upgrade("/app/%6B"),
        upgrade("/app/.."),
        upgrade("/app/."),
        upgrade("/app/k/tail"),
        upgrade("/app/"),
        upgrade("/app"),
        upgrade("/apps/k"),
        upgrade().replace(b"HTTP/1.1", b"HTTP/1.0"),
        upgrade().replace(b"GET", b"HEAD"),
        upgrade(Upgrade=""),
        upgrade(Upgrade="h2c"),
        upgrade(Upgrade="websocket, h2c"),
        upgrade(Connection=""),
        upgrade(Connection="keep-alive"),
        upgrade(Connection="upgraded"),
        upgrade(Sec_WebSocket_Version=""),
        upgrade(Sec_WebSocket_Version="8"),
        upgrade(Sec_WebSocket_Version="13, 8"),
        upgrade(Sec_WebSocket_Key=""),
        upgrade(Sec_WebSocket_Key="c2hvcnQ="),
        upgrade(Sec_WebSocket_Key=WS_KEY.rstrip("=")),
        upgrade(Sec_WebSocket_Key="!" + WS_KEY[1:]),
        upgrade(Sec_WebSocket_Key=WS_KEY + "AAAA"),
        upgrade(extra=f"Sec-WebSocket-Key: {WS_KEY}\r\n"),  # a second one
        upgrade(extra="Upgrade: websocket\r\n"),
        upgrade(extra="Connection: Upgrade\r\n"),
        upgrade(extra="Sec-WebSocket-Version: 13\r\n"),
        upgrade(extra="Origin: https://a.example\r\nOrigin: https://b.example\r\n"),
        upgrade(extra="Origin: https://\xe9.example\r\n".encode().decode("latin-1")),
        upgrade(extra="Content-Length: 2\r\n"),
        upgrade(extra="Content-Length: 0\r\nContent-Length: 0\r\n"),
        upgrade(extra="Transfer-Encoding: chunked\r\n"),
        upgrade(extra="Expect: 100-continue\r\n"),
        upgrade(extra="Sec-WebSocket-Protocol: chat\r\n"),
        upgrade(extra="Bad Header: x\r\n"),
        upgrade(extra=" folded\r\n"),
        upgrade(extra="X-Control: \x01\r\n"),
        upgrade(extra="".join(f"X-{i}: {i}\r\n" for i in range(101))),
        upgrade(extra=f"X-Big: {'x' * MAX_HEAD}\r\n"),
    ],
)
def test_anything_but_the_plain_upgrade_is_handed_over(data: bytes) -> None:
    assert isinstance(upgraded(data), HandOver)


def test_without_upgrades_the_get_is_handed_over_at_its_first_byte() -> None:
    assert isinstance(upgraded(b"G", upgrades=False), HandOver)
    framer = PublishFramer(LIMIT, upgrades=True)
    framer.receive(b"GET /app/")
    assert framer.next() is NEED_DATA  # it may still be an upgrade
    framer.receive(b"k?x HTTP/1.1\r\n")
    assert framer.next() is NEED_DATA  # a valid upgrade's request line, headers to come
    assert isinstance(upgraded(b"GET /ready"), HandOver)  # decided on the first bytes


def test_only_the_first_request_may_upgrade() -> None:
    framer = PublishFramer(LIMIT, upgrades=True)
    framer.receive(hot() + upgrade())
    assert isinstance(framer.next(), PublishRequest)
    assert framer.next() == HandOver("not a hot request line")
    assert framer.unconsumed() == upgrade()
