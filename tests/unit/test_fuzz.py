"""Property tests: the parsers of client and REST input fail only in the ways they document."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tidings.protocol import messages
from tidings.protocol.auth import rest_request_error
from tidings.protocol.errors import ProtocolError
from tidings.protocol.http1 import (
    NEED_DATA,
    HandOver,
    PublishFramer,
    PublishRequest,
    UpgradeRequest,
)
from tidings.protocol.rest import (
    RestError,
    RestLimits,
    Trigger,
    TriggerChecker,
    parse_batch,
    parse_trigger,
)
from tidings.protocol.session import Session, SessionPolicy

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = RestLimits()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
events = st.sampled_from(
    [
        "pusher:ping",
        "pusher:pong",
        "pusher:subscribe",
        "pusher:unsubscribe",
        "pusher:signin",
        "pusher:other",
        "pusher_internal:x",
        "client-x",
        "other",
        "",
    ]
)
# Frames shaped like Pusher messages, with arbitrary values in every field.
pusher_like = st.fixed_dictionaries(
    {"event": events | json_values},
    optional={
        "channel": st.sampled_from(["private-a", "presence-a", "news", "#server-to-user-1"])
        | json_values,
        "data": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "channel": st.sampled_from(["private-a", "presence-a", "news", "cache-x"])
                | json_values,
                "auth": json_values,
                "channel_data": json_values.map(json.dumps) | json_values,
                "user_data": json_values.map(json.dumps) | json_values,
            },
        ),
    },
)
rest_entry = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=30) | json_values,
        "data": st.text(max_size=30) | json_values,
        "channel": st.sampled_from(["a", "private-encrypted-x", "#x"]) | json_values,
        "channels": st.lists(st.sampled_from(["a", "b", "private-encrypted-x"]) | json_values)
        | json_values,
        "socket_id": json_values,
        "info": st.sampled_from(["user_count", "cache,subscription_count", "x"]) | json_values,
    },
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def decode_only_raises_protocol_error(frame: str | bytes) -> None:
    try:
        messages.decode(frame)
    except ProtocolError as exc:
        assert exc.code is None


@SETTINGS
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes(frame: bytes) -> None:
    decode_only_raises_protocol_error(frame)


@SETTINGS
@given(st.text(max_size=200))
def test_decode_arbitrary_text(frame: str) -> None:
    decode_only_raises_protocol_error(frame)


@SETTINGS
@given(json_values)
def test_decode_arbitrary_json(value: Any) -> None:
    decode_only_raises_protocol_error(encode(value))


@SETTINGS
@given(pusher_like)
def test_decode_pusher_shaped_json(value: dict[str, Any]) -> None:
    decode_only_raises_protocol_error(json.dumps(value))


def rest_only_raises_rest_error(body: bytes) -> None:
    for parse in (parse_trigger, parse_batch):
        try:
            parse(body, LIMITS)
        except RestError as exc:
            assert exc.status in (400, 413)


@SETTINGS
@given(st.binary(max_size=200))
def test_rest_arbitrary_bytes(body: bytes) -> None:
    rest_only_raises_rest_error(body)


@SETTINGS
@given(json_values)
def test_rest_arbitrary_json(value: Any) -> None:
    rest_only_raises_rest_error(encode(value))


@settings(SETTINGS, max_examples=150)
@given(rest_entry, st.lists(rest_entry | json_scalars, max_size=12))
def test_rest_shaped_json(entry: dict[str, Any], batch: list[Any]) -> None:
    rest_only_raises_rest_error(encode(entry))
    rest_only_raises_rest_error(encode({"batch": batch}))


# Kept across examples, as an app's checker is across requests: names it found valid are
# remembered, so later examples take its fast path.
SMALL_LIMITS = RestLimits(max_event_payload_bytes=8, max_event_name_length=4, max_batch_size=3)
CHECKERS = {LIMITS: TriggerChecker(LIMITS), SMALL_LIMITS: TriggerChecker(SMALL_LIMITS)}


def batch_outcome(parse: Any, *args: Any) -> list[Trigger] | tuple[int, str]:
    try:
        triggers: list[Trigger] = parse(*args)
    except RestError as exc:
        return exc.status, exc.message
    return triggers


# Entries near the fast path's shape: each value valid, at a limit, or just past it.
batch_entry = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["a", "b", "#x", "bad name", "private-encrypted-x", "", 1]),
        "name": st.sampled_from(["e", "eeee", "eeeee", "", 1]),
        "data": st.sampled_from(["d", "dddddddd", "ddddddddd", "éééé", "ééééd", "", None]),
    },
    optional={
        "socket_id": st.sampled_from(["1.2", "1.x", None, 3]),
        "info": st.sampled_from(["", None, "subscription_count", "x", 1]),
        "other": json_scalars,
    },
)


@settings(SETTINGS, max_examples=300)
@given(
    st.lists(batch_entry | rest_entry | json_scalars, max_size=12),
    st.sampled_from([LIMITS, SMALL_LIMITS]),
)
def test_checker_batch_answers_as_parse_batch(batch: list[Any], limits: RestLimits) -> None:
    body = encode({"batch": batch})
    expected = batch_outcome(parse_batch, body, limits)
    assert batch_outcome(CHECKERS[limits].batch, body) == expected


@SETTINGS
@given(
    st.lists(
        st.binary(max_size=80) | json_values.map(encode) | pusher_like.map(encode), max_size=8
    ),
    st.lists(st.floats(min_value=0, max_value=10_000), min_size=1, max_size=8),
)
def test_session_receive_and_tick_never_raise(frames: list[bytes], times: list[float]) -> None:
    policy = SessionPolicy("k", "s", authorized_connections_timeout=30.0)
    session = Session("1.1", policy, 0.0)
    for i, frame in enumerate(frames):
        now = times[i % len(times)]
        session.receive(frame, now)
        session.tick(now)


query_keys = st.sampled_from(
    ["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5", "AUTH_KEY", "x"]
) | st.text(max_size=10)
query_values = (
    st.sampled_from(["1.0", "1353088179", "", "d41d8cd98f00b204e9800998ecf8427e"])
    | st.integers().map(str)
    | st.text(max_size=40)
)


@SETTINGS
@given(
    st.lists(st.tuples(query_keys, query_values), max_size=10),
    st.binary(max_size=100),
    st.sampled_from(["GET", "POST", "get"]),
    st.text(max_size=20),
    st.floats(min_value=-1e12, max_value=1e12),
)
@example(  # an integer timestamp too large to subtract from a float
    [("auth_key", "k"), ("auth_timestamp", "1" + "0" * 400), ("auth_version", "1.0")]
    + [("auth_signature", "x")],
    b"",
    "GET",
    "/",
    0.0,
)
def test_rest_request_error_never_raises(
    query: list[tuple[str, str]], body: bytes, method: str, path: str, now: float
) -> None:
    result = rest_request_error("secret", method, path, query, body, now)
    assert result is None or isinstance(result, str)


# The lean REST path's framer (protocol/http1.py): pieces of real requests in any order.
http_pieces = st.sampled_from(
    [
        b"POST /apps/1/events?auth_key=k HTTP/1.1\r\n",
        b"POST /apps/1/batch_events HTTP/1.1\r\n",
        b"GET /ready HTTP/1.1\r\n",
        b"GET /app/k?protocol=7 HTTP/1.1\r\n",
        b"Upgrade: websocket\r\n",
        b"Connection: Upgrade\r\n",
        b"Sec-WebSocket-Version: 13\r\n",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"Content-Length: 2\r\n",
        b"Content-Length: 99999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"Host: x\r\n",
        b"\r\n",
        b"{}",
    ]
) | st.binary(max_size=12)


@SETTINGS
@given(st.lists(http_pieces, max_size=20), st.lists(st.integers(1, 64), max_size=8))
def test_publish_framer_never_raises_and_splits_change_nothing(
    pieces: list[bytes], sizes: list[int]
) -> None:
    wire = b"".join(pieces)

    def frame(chunks: list[bytes]) -> tuple[list[object], bytes]:
        framer = PublishFramer(1000, upgrades=True)
        events: list[object] = []
        for i, chunk in enumerate(chunks):
            framer.receive(chunk)
            while (event := framer.next()) is not NEED_DATA:
                if isinstance(event, UpgradeRequest):
                    # Final, and consumes nothing; its early bytes are those read with it.
                    assert not events and framer.unconsumed().endswith(event.early)
                    rest = framer.unconsumed() + b"".join(chunks[i + 1 :])
                    return [event._replace(early=b"")], rest
                if isinstance(event, HandOver):
                    return [*events, HandOver], framer.unconsumed() + b"".join(chunks[i + 1 :])
                assert isinstance(event, PublishRequest) and len(event.body) <= 1000
                events.append(event)
        return events, framer.unconsumed()

    chunks, pos = [], 0
    for size in sizes:
        chunks.append(wire[pos : pos + size])
        pos += size
    chunks.append(wire[pos:])
    events, left = frame(chunks)
    assert (events, left) == frame([wire])
    assert wire.endswith(left)
