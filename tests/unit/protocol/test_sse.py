"""protocol/sse.py: framing, the ids that carry positions, tokens, and reading what the node
sends, with literal bytes."""

from __future__ import annotations

import pytest

from tidings.protocol import sse
from tidings.protocol.recovery import positioned, unrecovered


def test_an_event_is_data_with_an_optional_id() -> None:
    message = b'{"event":"e","channel":"c","data":"x"}'
    assert sse.event(message) == b'data: {"event":"e","channel":"c","data":"x"}\n\n'
    assert sse.event(message, "1.abc") == b"id: 1.abc\n" + sse.event(message)
    assert sse.id_only("1.abc") == b"id: 1.abc\n\n"


def test_a_line_break_between_tokens_becomes_data_lines() -> None:
    # Legal JSON, but SSE would end the field at the break: the browser joins the lines
    # back with "\n", which JSON reads as whitespace.
    assert sse.event(b'{"a":\r\n1,\r"b":\n2}') == b'data: {"a":\ndata: 1,\ndata: "b":\ndata: 2}\n\n'


def test_ids_round_trip_and_name_channels_by_tag() -> None:
    ids = sse.StreamId()
    assert not ids
    ids.set("b", "e2", 0)
    ids.set("a", "e1", 5)
    assert ids.advance("a", 6)
    assert not ids.advance("no-history", 1)
    text = ids.encode()
    assert text == f"1.{sse.tag('a')}-e1-6.{sse.tag('b')}-e2-0"
    assert sse.decode_id(text, ["a", "b"]) == {"a": sse.Mark("e1", 6), "b": sse.Mark("e2", 0)}
    # A channel the id does not name is absent (new to the stream); one it names but the
    # stream no longer has is ignored.
    assert sse.decode_id(text, ["a", "c"]) == {"a": sse.Mark("e1", 6)}
    assert sse.decode_id("1", ["a"]) == {}


@pytest.mark.parametrize(
    "text",
    [
        "2.abcdef-e-1",  # another version
        "1.abcdef-e",  # no offset
        "1.abcdef--1",  # empty epoch
        "1.ABCDEF-e-1",  # a tag is lower-case hex
        "1.abcdef-e-1.abcdef-e-2",  # one tag twice
        "1.abcdef-e-99999999999999999",  # past what JavaScript counts exactly
        "1.abcdef-e/x-1",  # not URL-safe
        "1." + "abcdef-e-1." * 200,  # too long
        "1.abcdef-é-1",
    ],
)
def test_ids_this_version_did_not_write_are_refused(text: str) -> None:
    with pytest.raises(sse.BadId):
        sse.decode_id(text, ["a"])


def test_tokens_sign_the_sorted_private_channels_and_expire() -> None:
    token = sse.sign_token("secret", ["private-b", "private-a"], 2000)
    assert token.startswith("2000.") and len(token) == 5 + 64
    assert token == sse.sign_token("secret", ["private-a", "private-b", "private-a"], 2000)
    assert sse.token_error("secret", ["private-a", "private-b"], token, 1999.0) is None
    assert sse.token_error("secret", ["private-a", "private-b"], token, 2000.0) == "token expired"
    assert sse.token_error("other", ["private-a", "private-b"], token, 1.0) is not None
    assert sse.token_error("secret", ["private-a"], token, 1.0) is not None
    forged = "9999." + token.split(".")[1]  # a later expiry is not signed
    assert sse.token_error("secret", ["private-a", "private-b"], forged, 1.0) is not None
    assert sse.token_error("secret", ["private-a"], "x" * 200, 1.0) == "token too long"
    assert sse.token_error("secret", ["private-a"], "2000.xyz", 1.0) is not None


def test_read_strips_the_offset_recovery_spliced_in() -> None:
    stock = b'{"event":"tick","channel":"c","data":"1"}'
    item = sse.read(positioned(stock, 7))
    assert (item.event, item.channel, item.offset, item.data) == ("tick", "c", 7, stock)
    plain = sse.read(stock)
    assert (plain.offset, plain.data) == (None, stock)
    notice = sse.read(unrecovered("c", "ep", 3))
    assert notice.event == "tidings:unrecovered" and notice.offset is None


def test_read_finds_the_position_in_subscription_succeeded() -> None:
    data = '{"tidings":{"epoch":"ep","offset":4},"recovered":true}'
    message = b'{"event":"pusher_internal:subscription_succeeded","channel":"c","data":%s}' % (
        b'"' + data.replace('"', '\\"').encode() + b'"'
    )
    item = sse.read(message)
    assert item.position == sse.Mark("ep", 4) and item.recovered is True
    stock = sse.read(b'{"event":"pusher_internal:subscription_succeeded","channel":"c"}')
    assert stock.position is None and stock.recovered is None
