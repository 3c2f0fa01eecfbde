"""brokers/bus.py: what a node accepts from the Redis bus, byte for byte."""

from __future__ import annotations

import logging

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.brokers.bus import (
    CONTROL_KINDS,
    BusStats,
    Dropped,
    Publication,
    decode_control,
    decode_publication,
    encode_control,
    encode_positioned,
    encode_publication,
)
from tidings.brokers.control import (
    Console,
    ControlMessage,
    MemberAdded,
    MemberRemoved,
    Recount,
    Terminate,
    UserOffline,
    UserOnline,
)
from tidings.brokers.history import Position
from tidings.protocol.frames import text_frame

EVENT = b'{"event":"e","channel":"c","data":"{}"}'


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_publications_round_trip_unframed(size: int) -> None:
    message = b'{"event":"e","data":"' + b"x" * size + b'"}'
    data = encode_publication("node-1", "1.2", message)
    assert data == b"node-1\x001.2\x00" + message  # the message as it is: no WebSocket frame
    assert decode_publication(data) == Publication("node-1", "1.2", message)
    assert decode_publication(encode_publication("n", None, EVENT)).exclude is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"no separators", "malformed"),
        (b"origin\x00only one separator", "malformed"),
        (b"\x00\x00" + EVENT, "malformed"),  # no origin
        (b"\xff\xfe\x00\x00" + EVENT, "malformed"),
        (b"n\x00\xff\x00" + EVENT, "malformed"),
        (b"n\x00\x00", "bad_frame"),
        (b"n\x00\x00" + text_frame(EVENT), "bad_frame"),  # framed, as older nodes wrote
        (b"n\x00\x00" + EVENT[:-1], "bad_frame"),  # cut short
        (b"n\x00\x00" + EVENT + EVENT, "bad_frame"),  # a second message behind it
        (b'n\x00\x00{"event":"trunc', "bad_frame"),
        (b"n\x00\x00[1,2]", "bad_frame"),
        (b'n\x00\x00{"event":1}', "bad_frame"),
        (b'n\x00\x00{"data":"{}"}', "bad_frame"),  # no event name
        (b"n\x00\x00\xff\xfe", "bad_frame"),
        (b'n\x00\x00{"event":"\xff"}', "bad_frame"),  # not UTF-8: no browser takes it
    ],
)
def test_publications_tidings_did_not_write_are_dropped(data: bytes, reason: str) -> None:
    with pytest.raises(Dropped) as dropped:
        decode_publication(data)
    assert dropped.value.reason == reason


@pytest.mark.parametrize("exclude", [None, "1.2"])
def test_positioned_publications_round_trip(exclude: str | None) -> None:
    position = Position("a1b2c3d4", 123456)
    data = encode_positioned(position, "node-1", exclude, EVENT)
    assert (
        data == b"\x01a1b2c3d4\x00123456\x00node-1\x00" + (exclude or "").encode() + b"\x00" + EVENT
    )
    assert decode_publication(data) == Publication("node-1", exclude, EVENT, position)
    assert decode_publication(encode_publication("node-1", exclude, EVENT)).position is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01", "malformed"),
        (b"\x01e\x00", "malformed"),  # no offset
        (b"\x01\x001\x00n\x00\x00" + EVENT, "malformed"),  # empty epoch
        (b"\x01" + b"e" * 33 + b"\x001\x00n\x00\x00" + EVENT, "malformed"),  # epoch too long
        (b"\x01e-1\x001\x00n\x00\x00" + EVENT, "malformed"),  # not alphanumeric
        (b"\x01\xc3\xa9\x001\x00n\x00\x00" + EVENT, "malformed"),  # not ASCII
        (b"\x01e\x00\x00n\x00\x00" + EVENT, "malformed"),  # empty offset
        (b"\x01e\x000\x00n\x00\x00" + EVENT, "malformed"),  # offset 0 is "none yet"
        (b"\x01e\x0007\x00n\x00\x00" + EVENT, "malformed"),  # leading zero
        (b"\x01e\x00-7\x00n\x00\x00" + EVENT, "malformed"),
        (b"\x01e\x00" + b"9" * 19 + b"\x00n\x00\x00" + EVENT, "malformed"),  # past 64 bits
        (b"\x01e\x00\xd9\xa1\x00n\x00\x00" + EVENT, "malformed"),  # Arabic-Indic digit
        (b"\x01e\x001\x00", "malformed"),  # position, then nothing
        (b"\x01e\x001\x00n\x00\x00" + EVENT[:-1], "bad_frame"),
        (b"\x01e\x001\x00\x01e\x002\x00n\x00\x00" + EVENT, "malformed"),  # two positions
    ],
)
def test_positioned_publications_tidings_did_not_write_are_dropped(
    data: bytes, reason: str
) -> None:
    with pytest.raises(Dropped) as dropped:
        decode_publication(data)
    assert dropped.value.reason == reason


@given(st.binary(max_size=200))
def test_no_bytes_make_the_decoder_raise_anything_but_dropped(data: bytes) -> None:
    for candidate in (data, b"\x01" + data, b"\x01e\x001\x00" + data):
        try:
            publication = decode_publication(candidate)
        except Dropped:
            continue
        assert publication.position is None or publication.position.offset > 0


EVERY_KIND: list[tuple[ControlMessage, dict[str, str]]] = [
    (Terminate("u1"), {"k": "terminate", "u": "u1", "c": "", "d": ""}),
    (UserOnline("u1"), {"k": "online", "u": "u1", "c": "", "d": ""}),
    (UserOffline("u1"), {"k": "offline", "u": "u1", "c": "", "d": ""}),
    (
        MemberAdded("presence-p", "u1", '{"n":1}'),
        {"k": "member_added", "u": "u1", "c": "presence-p", "d": '{"n":1}'},
    ),
    (
        MemberRemoved("presence-p", "u1"),
        {"k": "member_removed", "u": "u1", "c": "presence-p", "d": ""},
    ),
    (Recount("presence-p"), {"k": "recount", "u": "", "c": "presence-p", "d": ""}),
    (Console('{"w":"n2"}'), {"k": "console", "u": "", "c": "", "d": '{"w":"n2"}'}),
]


@pytest.mark.parametrize(("message", "wire"), EVERY_KIND)
def test_every_control_kind_keeps_the_wire_shape_of_earlier_releases(
    message: ControlMessage, wire: dict[str, str]
) -> None:
    """Every key is written, as nodes of the previous release wrote and expect them, and
    what such a node writes decodes into the typed message."""
    encoded = encode_control("n1", "app", message)
    assert orjson.loads(encoded) == {"o": "n1", "a": "app", **wire}
    assert decode_control(orjson.dumps({"o": "n1", "a": "app", **wire})).message == message


def test_every_control_class_has_a_kind() -> None:
    assert {type(m) for m, _ in EVERY_KIND} == set(CONTROL_KINDS.values())


def test_control_messages_round_trip() -> None:
    message = MemberAdded("presence-p", "u1", '{"name":"A"}')
    envelope = decode_control(encode_control("node-1", "app", message))
    assert (envelope.origin, envelope.app_id, envelope.message) == ("node-1", "app", message)
    terminate = decode_control(b'{"o":"n","a":"app","k":"terminate","u":"u1"}')
    assert terminate.message == Terminate("u1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "malformed"),
        (b'{"o":"n","a":"app","k":"terminate","u":"u', "malformed"),  # truncated
        (b"[1, 2]", "malformed"),
        (b'"text"', "malformed"),
        (b'{"o":"n","a":"app","k":"terminate","u":1}', "malformed"),
        (b'{"a":"app","k":"terminate","u":"u1"}', "malformed"),  # no origin
        (b'{"o":"n","k":"terminate","u":"u1"}', "malformed"),  # no app
        (b'{"o":"n","a":"app","k":"member_added","u":"u1","d":"{no"}', "malformed"),
        (b'{"o":"n","a":"app","k":"explode","u":"u1"}', "unknown_kind"),
        (b'{"o":"n","a":"app","u":"u1"}', "unknown_kind"),
    ],
)
def test_control_messages_tidings_did_not_write_are_dropped(data: bytes, reason: str) -> None:
    with pytest.raises(Dropped) as dropped:
        decode_control(data)
    assert dropped.value.reason == reason


def test_drops_are_counted_each_time_and_logged_once_a_minute_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    stats = BusStats(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "tidings.redis")
    for _ in range(1000):
        stats.drop("malformed", b"p#control", 5, "control message is not JSON")
    stats.drop("unknown_kind", b"p#control", 9, "unknown kind")
    assert stats.dropped == {
        "malformed": 1000,
        "bad_frame": 0,
        "unknown_kind": 1,
        "handler_error": 0,
    }
    assert [r.getMessage() for r in caplog.records] == [
        "dropped a bus message on p#control (5 bytes, malformed): control message is not JSON",
        "dropped a bus message on p#control (9 bytes, unknown_kind): unknown kind",
    ]
    caplog.clear()
    now[0] += 60
    stats.drop("malformed", b"p#control", 5, "again")
    assert [r.getMessage() for r in caplog.records] == [
        "dropped a bus message on p#control (5 bytes, malformed): again "
        "(999 more dropped for this reason since the last report)"
    ]


def test_a_handler_error_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    stats = BusStats()
    caplog.set_level(logging.WARNING, "tidings.redis")
    try:
        raise KeyError("k")
    except KeyError as exc:
        stats.drop("handler_error", b"p#node#n1", 12, exc)
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert stats.dropped["handler_error"] == 1
