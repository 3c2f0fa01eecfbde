"""Pusher error and close codes (protocol 7, "Error Codes").

Ranges, as pusher-js acts on them:

* 4000-4099: the connection must not be retried unchanged (pusher-js gives up).
* 4100-4199: reconnect after backing off at least one second.
* 4200-4299: reconnect immediately.
* 4300-4399: any other error; pusher-js treats a close with one of these as final.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLOSED_AFTER_INACTIVITY = 4202
    CLIENT_EVENT_RATE_LIMIT = 4301
    WATCHLIST_LIMIT = 4302
    INVALID_TIDINGS = 4303  # Tidings: a malformed recovery field in pusher:subscribe

    @property
    def reconnects(self) -> bool:
        """Whether pusher-js will reconnect after a close with this code."""
        return 4100 <= self.value < 4300


MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.SSL_ONLY: "Application only accepts SSL connections",
    ErrorCode.APP_NOT_FOUND: "Application does not exist",
    ErrorCode.APP_DISABLED: "Application disabled",
    ErrorCode.OVER_CONNECTION_QUOTA: "Application is over connection quota",
    ErrorCode.PATH_NOT_FOUND: "Path not found",
    ErrorCode.INVALID_VERSION: "Invalid version string format",
    ErrorCode.UNSUPPORTED_PROTOCOL: "Unsupported protocol version",
    ErrorCode.NO_PROTOCOL: "No protocol version supplied",
    ErrorCode.UNAUTHORIZED: "Connection is unauthorized",
    ErrorCode.OVER_CAPACITY: "Over capacity",
    ErrorCode.RECONNECT: "Generic reconnect immediately",
    ErrorCode.PONG_NOT_RECEIVED: "Pong reply not received",
    ErrorCode.CLOSED_AFTER_INACTIVITY: "Closed after inactivity",
    ErrorCode.CLIENT_EVENT_RATE_LIMIT: "Client event rejected due to rate limit",
    ErrorCode.WATCHLIST_LIMIT: "Watchlist limit exceeded: only the first 100 user ids are watched",
    ErrorCode.INVALID_TIDINGS: "Invalid tidings field in pusher:subscribe",
}


class ProtocolError(Exception):
    """A client frame broke a protocol rule; answered with ``pusher:error``.

    ``code`` is None for errors Pusher reports without a code (malformed frames), so the
    connection stays open and pusher-js only emits an ``error`` event.
    """

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
