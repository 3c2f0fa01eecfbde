"""protocol/recovery.py: the opt-in field, the offset splice and the recovery messages."""

from __future__ import annotations

import orjson
import pytest

from tidings.protocol import messages
from tidings.protocol.errors import ErrorCode, ProtocolError
from tidings.protocol.recovery import (
    OptIn,
    Resume,
    opt_in,
    positioned,
    succeeded_data,
    unrecovered,
)


def test_absent_field_is_a_stock_subscription() -> None:
    assert opt_in(None) is None


def test_opt_in_without_and_with_recovery() -> None:
    assert opt_in({"v": 1}) == OptIn()
    raw = {"v": 1, "recover": {"epoch": "ab12", "offset": 12, "socket_id": "123.456"}}
    assert opt_in(raw) == OptIn(Resume("ab12", 12, "123.456"))
    assert opt_in({"v": 1, "recover": {"epoch": "e", "offset": 0}}) == OptIn(Resume("e", 0, None))


def test_unknown_keys_are_ignored_for_newer_clients() -> None:
    assert opt_in({"v": 1, "later": True}) == OptIn()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("yes", "must be an object"),
        ({}, "version must be 1"),
        ({"v": 2}, "version must be 1"),
        ({"v": True}, "version must be 1"),
        ({"v": 1, "recover": 5}, "recover must be an object"),
        ({"v": 1, "recover": {"offset": 1}}, "recover.epoch"),
        ({"v": 1, "recover": {"epoch": "", "offset": 1}}, "recover.epoch"),
        ({"v": 1, "recover": {"epoch": "e" * 33, "offset": 1}}, "recover.epoch"),
        ({"v": 1, "recover": {"epoch": "e", "offset": -1}}, "recover.offset"),
        ({"v": 1, "recover": {"epoch": "e", "offset": 2**53}}, "recover.offset"),
        ({"v": 1, "recover": {"epoch": "e", "offset": "3"}}, "recover.offset"),
        ({"v": 1, "recover": {"epoch": "e", "offset": False}}, "recover.offset"),
        ({"v": 1, "recover": {"epoch": "e", "offset": 1, "socket_id": "x"}}, "socket_id"),
        ({"v": 1, "recover": {"epoch": "e", "offset": 1, "socket_id": 12}}, "socket_id"),
    ],
)
def test_malformed_opt_in_is_a_4303_naming_the_problem(raw: object, says: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        opt_in(raw)
    assert caught.value.code is ErrorCode.INVALID_TIDINGS
    assert says in caught.value.message


def test_positioned_splices_the_offset_as_the_last_key() -> None:
    message = messages.event("x", "c", '{"a":1}')
    assert positioned(message, 13) == (
        b'{"event":"x","channel":"c","data":"{\\"a\\":1}","tidings":{"offset":13}}'
    )
    decoded = orjson.loads(positioned(message, 13))
    assert list(decoded) == ["event", "channel", "data", "tidings"]


def test_positioned_ignores_whitespace_after_the_object() -> None:
    assert positioned(b'{"event":"x"} \n', 2) == b'{"event":"x","tidings":{"offset":2}}'


def test_succeeded_data_for_public_and_presence() -> None:
    assert orjson.loads(succeeded_data({}, "E", 4, None)) == {
        "tidings": {"epoch": "E", "offset": 4}
    }
    presence = {"presence": {"count": 0, "ids": [], "hash": {}}}
    assert orjson.loads(succeeded_data(presence, "E", 4, False)) == {
        **presence,
        "tidings": {"epoch": "E", "offset": 4},
        "recovered": False,
    }


def test_unrecovered_event() -> None:
    assert orjson.loads(unrecovered("c", "E", 9)) == {
        "event": "tidings:unrecovered",
        "channel": "c",
        "data": '{"epoch":"E","offset":9}',
    }
