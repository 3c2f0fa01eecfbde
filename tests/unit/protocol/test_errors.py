"""protocol/errors.py: Pusher error codes, their ranges and messages."""

from __future__ import annotations

import pytest

from tidings.protocol.errors import MESSAGES, ErrorCode, ProtocolError


def test_codes_match_pusher() -> None:
    assert {code.name: int(code) for code in ErrorCode} == {
        "SSL_ONLY": 4000,
        "APP_NOT_FOUND": 4001,
        "APP_DISABLED": 4003,
        "OVER_CONNECTION_QUOTA": 4004,
        "PATH_NOT_FOUND": 4005,
        "INVALID_VERSION": 4006,
        "UNSUPPORTED_PROTOCOL": 4007,
        "NO_PROTOCOL": 4008,
        "UNAUTHORIZED": 4009,
        "OVER_CAPACITY": 4100,
        "RECONNECT": 4200,
        "PONG_NOT_RECEIVED": 4201,
        "CLOSED_AFTER_INACTIVITY": 4202,
        "CLIENT_EVENT_RATE_LIMIT": 4301,
        "WATCHLIST_LIMIT": 4302,
        "INVALID_TIDINGS": 4303,  # Tidings' own, in Pusher's "other errors" range
    }


@pytest.mark.parametrize(
    ("code", "reconnects"),
    [
        (ErrorCode.APP_NOT_FOUND, False),
        (ErrorCode.UNAUTHORIZED, False),
        (ErrorCode.OVER_CAPACITY, True),
        (ErrorCode.RECONNECT, True),
        (ErrorCode.PONG_NOT_RECEIVED, True),
        (ErrorCode.CLOSED_AFTER_INACTIVITY, True),
        (ErrorCode.CLIENT_EVENT_RATE_LIMIT, False),
        (ErrorCode.WATCHLIST_LIMIT, False),
    ],
)
def test_reconnects(code: ErrorCode, reconnects: bool) -> None:
    assert code.reconnects is reconnects


def test_every_code_has_a_message() -> None:
    assert set(MESSAGES) == set(ErrorCode)
    assert all(MESSAGES[code] for code in ErrorCode)
    assert MESSAGES[ErrorCode.APP_NOT_FOUND] == "Application does not exist"


def test_protocol_error() -> None:
    error = ProtocolError("bad frame")
    assert (error.message, error.code, str(error)) == ("bad frame", None, "bad frame")
    coded = ProtocolError("slow down", ErrorCode.CLIENT_EVENT_RATE_LIMIT)
    assert coded.code is ErrorCode.CLIENT_EVENT_RATE_LIMIT
