"""protocol/sockjs.py: the frames of pusher-js's HTTP fallbacks (pusher-js http_socket.ts)."""

from __future__ import annotations

import json

import pytest

from tidings.protocol import sockjs
from tidings.protocol.errors import ProtocolError


def test_open_and_heartbeat_frames() -> None:
    assert sockjs.OPEN == b"o\n"
    assert sockjs.HEARTBEAT == b"h\n"


def test_prelude_is_2048_h_and_a_newline() -> None:
    assert sockjs.PRELUDE == b"h" * 2048 + b"\n"
    assert len(sockjs.PRELUDE) == 2049


def test_messages_frame_carries_each_message_as_a_string() -> None:
    frame = sockjs.messages_frame([b'{"event":"a","data":"{}"}', b'{"event":"b"}'])
    assert frame == b'a["{\\"event\\":\\"a\\",\\"data\\":\\"{}\\"}","{\\"event\\":\\"b\\"}"]\n'
    assert json.loads(frame[1:]) == ['{"event":"a","data":"{}"}', '{"event":"b"}']


def test_messages_frame_keeps_order_and_non_ascii() -> None:
    messages = [json.dumps({"event": f"e{i}", "data": "héllo ✓"}).encode() for i in range(5)]
    frame = sockjs.messages_frame(messages)
    assert frame.startswith(b"a[") and frame.endswith(b"]\n")
    assert frame.count(b"\n") == 1  # one frame, one line
    assert [s.encode() for s in json.loads(frame[1:])] == messages


def test_messages_frame_of_nothing() -> None:
    assert sockjs.messages_frame([]) == b"a[]\n"


def test_close_frame() -> None:
    assert sockjs.close_frame(4100, "Slow consumer") == b'c[4100,"Slow consumer"]\n'
    assert sockjs.close_frame(4009, 'say "bye"') == b'c[4009,"say \\"bye\\""]\n'


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        (b"[]", []),
        (b'["{\\"event\\":\\"pusher:ping\\"}"]', ['{"event":"pusher:ping"}']),
        (b'["a", "b", "c"]', ["a", "b", "c"]),
        ('["héllo ✓"]'.encode(), ["héllo ✓"]),
    ],
)
def test_parse_send_accepts_arrays_of_strings(body: bytes, messages: list[str]) -> None:
    assert sockjs.parse_send(body) == messages


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[",
        b'"a string"',
        b'{"event":"pusher:ping"}',
        b"null",
        b"[1]",
        b'["a", 2]',
        b'[["nested"]]',
        b'[{"event":"pusher:ping"}]',
        b'["a", null]',
    ],
)
def test_parse_send_refuses_anything_else(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        sockjs.parse_send(body)


def test_parse_send_bounds_the_number_of_messages() -> None:
    at_limit = json.dumps(["{}"] * sockjs.MAX_SEND_MESSAGES).encode()
    assert len(sockjs.parse_send(at_limit)) == sockjs.MAX_SEND_MESSAGES
    over = json.dumps(["{}"] * (sockjs.MAX_SEND_MESSAGES + 1)).encode()
    with pytest.raises(ProtocolError):
        sockjs.parse_send(over)


@pytest.mark.parametrize(
    ("server", "session"),
    [("0", "0h237q10"), ("775", "0h237q10"), ("999", "vvvvvvvv"), ("1", "A" * 32)],
)
def test_session_names_pusher_js_makes_are_plausible(server: str, session: str) -> None:
    """pusher-js: a random 0-999 and 8 base-32 characters (http_socket.ts)."""
    assert sockjs.session_name_error(server, session) is None


@pytest.mark.parametrize(
    ("server", "session", "part"),
    [
        ("", "0h237q10", "server"),
        ("1000", "0h237q10", "server"),
        ("-1", "0h237q10", "server"),
        ("\u0661", "0h237q10", "server"),  # an Arabic-Indic digit: not [0-9]
        ("1", "0", "session"),
        ("12", "Ab3", "session"),
        ("1", "a" * 33, "session"),
        ("1", "abcd-efgh", "session"),
        ("1", "abcd efgh", "session"),
        ("1", "abcd\u00e9fgh", "session"),
        ("1", "abcdefgh\n", "session"),
    ],
)
def test_implausible_session_names(server: str, session: str, part: str) -> None:
    error = sockjs.session_name_error(server, session)
    assert error is not None and part in error


def test_the_second_receiver_close_frame_is_sockjs_2010() -> None:
    frame = sockjs.close_frame(sockjs.ANOTHER_RECEIVER_CODE, sockjs.ANOTHER_RECEIVER_REASON)
    assert frame == b'c[2010,"Another connection still open"]\n'


def test_text_length_is_javascript_string_length() -> None:
    """pusher-js measures its buffer in UTF-16 code units (responseText.length)."""
    assert sockjs.text_length(b"a[]\n") == 4
    assert sockjs.text_length("é".encode()) == 1  # 2 bytes, 1 unit
    assert sockjs.text_length("✓".encode()) == 1  # 3 bytes, 1 unit
    assert sockjs.text_length("😀".encode()) == 2  # 4 bytes, a surrogate pair
    assert sockjs.text_length(sockjs.PRELUDE) == 2049


def test_request_number_reads_pusher_js_counter() -> None:
    assert sockjs.request_number("1") == 1
    assert sockjs.request_number("9007199254740991") is None  # 16 digits: past the limit
    assert sockjs.request_number("900719925474099") == 900719925474099
    for bad in (None, "", "-1", "1.5", "x", "1 ", "١"):
        assert sockjs.request_number(bad) is None, bad
