"""Frames the two hot REST requests (issue 18), and a connection's opening WebSocket
upgrade, out of an HTTP/1.1 byte stream; sans-I/O.

``POST /apps/{app_id}/events`` and ``POST /apps/{app_id}/batch_events`` are most of what a
Pusher server is asked over HTTP, and aiohttp's general request machinery costs more than
the rest of their handling. :class:`PublishFramer` recognises exactly these requests, in
their plainest form, and nothing else: the first byte of anything it does not recognise
(another path or method, HTTP/1.0, a chunked body, ``Expect``, an upgrade, a header it
cannot vouch for, a body over the limit, a malformed line) makes it answer
:class:`HandOver`, and the caller gives that byte and every later one to the general server,
which answers it exactly as it always has (its own 400, 404, 413 ...). The framer never
answers an error itself, so no error status or body can differ between the two paths.

With ``upgrades=True``, the first request on the connection may also be the plain form of a
WebSocket upgrade to ``GET /app/{key}`` (RFC 6455 4.1: ``Upgrade: websocket``, a
``Connection`` with the ``upgrade`` token, ``Sec-WebSocket-Version: 13``, a key that is the
base64 of 16 bytes, no body): the framer returns it as an :class:`UpgradeRequest`, which is
final like a :class:`HandOver`. The caller either switches protocols itself (the bytes after
the head are in ``UpgradeRequest.early``) or hands :meth:`~PublishFramer.unconsumed`, the
upgrade request included, to the general server, which answers it as it always has.

Usage: :meth:`PublishFramer.receive` the bytes read, then call :meth:`~PublishFramer.next`
until it returns :data:`NEED_DATA` (or :class:`HandOver`, which is final). The caller must
answer each :class:`PublishRequest` before asking for the next (RFC 9112 9.3.2: responses go
in request order); :meth:`~PublishFramer.unconsumed` is what the general server must read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal, NamedTuple

# The request line of a hot request (RFC 9112 3). Only unreserved characters in the app id
# (so the path needs no percent-decoding and the route aiohttp would match is certain), and
# in the query only what a Pusher signature uses: no "%" or "+", whose decoding the general
# server's URL library defines.
_REQUEST_LINE: Final = re.compile(
    rb"POST (/apps/([A-Za-z0-9_.~-]+)/(events|batch_events))"
    rb"(?:\?([A-Za-z0-9_.~,:=&-]*))? HTTP/1\.1"
)
# RFC 9110 5.1 / 5.5: a token, a colon, a value of visible characters, spaces, tabs and
# obs-text. No whitespace before the colon (RFC 9112 5.1: reject it), no obs-fold.
# The opening upgrade (RFC 6455 4.1), with the same conservative classes: the key needs no
# decoding, and "." or ".." (which the general server's URL library would resolve) are not
# keys (checked in _upgrade).
_UPGRADE_LINE: Final = re.compile(
    rb"GET (/app/([A-Za-z0-9_.~-]+))(?:\?([A-Za-z0-9_.~,:=&-]*))? HTTP/1\.1"
)
# RFC 6455 4.1: the base64 of 16 bytes is 22 characters and "==".
_WEBSOCKET_KEY: Final = re.compile(rb"[A-Za-z0-9+/]{22}==")
_HEADER_LINE: Final = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)"
)
_DIGITS: Final = re.compile(rb"[0-9]{1,15}")

MAX_HEAD: Final = 8190  # bytes of request line and headers; aiohttp's line limit
MAX_HEADERS: Final = 100
# Headers whose presence means the request is not a plain Content-Length body.
_NOT_PLAIN: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Headers an upgrade this framer vouches for has exactly once (Origin: at most once).
_UPGRADE_ONCE: Final = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-version", b"sec-websocket-key", b"origin"}
)
# Headers whose presence sends an upgrade to the general server: a body, or a subprotocol
# (Pusher clients ask for none; the general server logs the mismatch).
_NOT_PLAIN_UPGRADE: Final = frozenset({b"transfer-encoding", b"expect", b"sec-websocket-protocol"})


class Phase(Enum):
    """Where the framer is in the request it is waiting for (the connection guard's view)."""

    IDLE = "idle"  # nothing of a next request has arrived
    HEAD = "head"  # part of a request line or headers
    BODY = "body"  # headers complete, body incomplete


class PublishRequest(NamedTuple):
    """One complete hot request. ``path`` needs no decoding (see ``_REQUEST_LINE``);
    ``headers`` are (lower-case name, value) pairs in order, as sent. (Immutable, and a
    tuple rather than a frozen dataclass: made once per request, it is built 3× faster.)"""

    endpoint: Literal["events", "batch_events"]
    app_id: str
    path: str
    query_items: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool  # False: the client sent "Connection: close"


class UpgradeRequest(NamedTuple):
    """The plain WebSocket upgrade opening a connection (see the module docstring).
    ``path`` and ``app_key`` need no decoding; ``origin`` is the Origin header, if any."""

    app_key: str
    path: str
    query_items: list[tuple[str, str]]
    websocket_key: str
    origin: str | None
    early: bytes  # what followed the head: frames sent before the 101 was read

    @property
    def protocol(self) -> str | None:
        """The ``protocol`` query parameter (its first value), as the general server reads it."""
        return next((value for name, value in self.query_items if name == "protocol"), None)


@dataclass(frozen=True, slots=True)
class HandOver:
    """Not a request this framer answers; ``reason`` is for logs and tests."""

    reason: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

Event = PublishRequest | UpgradeRequest | HandOver | _NeedData


def parse_query(query: str) -> list[tuple[str, str]]:
    """``a=1&b=&c`` as ordered pairs, blank values kept and empty parts skipped, as the
    general server parses a query that holds no "%" or "+"."""
    items: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            items.append((name, value))
    return items


class PublishFramer:
    """Hot requests out of one connection's bytes; see the module docstring."""

    __slots__ = ("max_body", "_buffer", "_handed_over", "_head_end", "_route", "_upgrades")

    def __init__(self, max_body: int, upgrades: bool = False) -> None:
        self.max_body = max_body
        # An upgrade may still come: the first request has not been returned yet.
        self._upgrades = upgrades
        self._buffer = b""
        self._handed_over: HandOver | None = None
        # Where the current request's head ends (index after CRLFCRLF), once known.
        self._head_end = -1
        # The endpoint and app id of a request whose body is still arriving.
        self._route: tuple[Literal["events", "batch_events"], str] | None = None

    @property
    def awaited_body(self) -> tuple[Literal["events", "batch_events"], str] | None:
        """``(endpoint, app_id)`` of the request whose headers are complete and whose body
        is still arriving (a client that goes away now aborted an upload)."""
        return self._route

    @property
    def phase(self) -> Phase:
        if not self._buffer:
            return Phase.IDLE
        return Phase.BODY if self._head_end >= 0 else Phase.HEAD

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive(self, data: bytes) -> None:
        """Bytes read from the connection (none after a :class:`HandOver`)."""
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data

    def unconsumed(self) -> bytes:
        """Every byte not yet returned as a request, from the start of the current one."""
        return self._buffer

    def next(self) -> Event:
        """The next complete request, :data:`NEED_DATA`, or :class:`HandOver` (from then
        on, always the same one). After an :class:`UpgradeRequest`, always a HandOver."""
        if self._handed_over is not None:
            return self._handed_over
        buffer = self._buffer
        if not buffer:
            return NEED_DATA
        if self._head_end < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return self._incomplete_head(buffer)
            if end + 4 > MAX_HEAD:
                return self._hand_over("request head too large")
            self._head_end = end + 4
        return self._request(buffer)

    def _incomplete_head(self, buffer: bytes) -> Event:
        line_end = buffer.find(b"\r\n")
        if line_end >= 0:
            if _REQUEST_LINE.fullmatch(buffer, 0, line_end) is None and not (
                self._upgrades and _UPGRADE_LINE.fullmatch(buffer, 0, line_end) is not None
            ):
                return self._hand_over("not a hot request line")
        elif not b"POST /apps/".startswith(buffer[:11]) and not (
            self._upgrades and b"GET /app/".startswith(buffer[:9])
        ):
            return self._hand_over("not a hot request line")  # decided on the first bytes
        if len(buffer) > MAX_HEAD:
            return self._hand_over("request head too large")
        return NEED_DATA

    def _request(self, buffer: bytes) -> Event:
        head_end = self._head_end
        lines = buffer[: head_end - 4].split(b"\r\n")
        if len(lines) - 1 > MAX_HEADERS:
            return self._hand_over("too many headers")
        line = _REQUEST_LINE.fullmatch(lines[0])
        if line is None:
            if self._upgrades and buffer.startswith(b"GET "):
                return self._upgrade(lines, buffer[head_end:])
            return self._hand_over("not a hot request line")
        self._upgrades = False  # only the first request on a connection may upgrade it
        headers: list[tuple[str, str]] = []
        length = -1
        keep_alive = True
        for raw in lines[1:]:
            header = _HEADER_LINE.fullmatch(raw)
            if header is None:
                return self._hand_over("a header line this framer does not vouch for")
            name = header.group(1).lower()
            value = header.group(2).rstrip(b" \t")
            if name in _NOT_PLAIN:
                return self._hand_over(f"{name.decode()} header")
            if name == b"content-length":
                if length >= 0 or _DIGITS.fullmatch(value) is None:
                    return self._hand_over("a second or malformed Content-Length")
                length = int(value)
            elif name == b"connection":
                tokens = {token.strip().lower() for token in value.split(b",")}
                if b"upgrade" in tokens:
                    return self._hand_over("connection upgrade")
                if b"close" in tokens:
                    keep_alive = False
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if length < 0:
            return self._hand_over("no Content-Length")
        if length > self.max_body:
            return self._hand_over("body over the limit")  # the general server's 413
        end = head_end + length
        path, app_id, endpoint, query = line.groups()
        route: Literal["events", "batch_events"] = (
            "events" if endpoint == b"events" else "batch_events"
        )
        if len(buffer) < end:
            self._route = (route, app_id.decode())
            return NEED_DATA
        self._buffer = buffer[end:]
        self._head_end = -1
        self._route = None
        return PublishRequest(
            endpoint=route,
            app_id=app_id.decode(),
            path=path.decode(),
            query_items=parse_query(query.decode()) if query else [],
            headers=headers,
            body=buffer[head_end:end],
            keep_alive=keep_alive,
        )

    def _upgrade(self, lines: list[bytes], early: bytes) -> UpgradeRequest | HandOver:
        """The opening upgrade, if ``lines`` (its head) are its plain form."""
        line = _UPGRADE_LINE.fullmatch(lines[0])
        if line is None:
            return self._hand_over("not a hot request line")
        path, key, query = line.groups()
        if key in (b".", b".."):
            return self._hand_over("a dot segment for a key")
        once: dict[bytes, bytes] = {}
        for raw in lines[1:]:
            header = _HEADER_LINE.fullmatch(raw)
            if header is None:
                return self._hand_over("a header line this framer does not vouch for")
            name = header.group(1).lower()
            value = header.group(2).rstrip(b" \t")
            if name in _NOT_PLAIN_UPGRADE:
                return self._hand_over(f"{name.decode()} header")
            if name in _UPGRADE_ONCE or name == b"content-length":
                if name in once:
                    return self._hand_over(f"a second {name.decode()} header")
                once[name] = value
        # RFC 6455 4.2.1: what a server needs to see in the opening handshake.
        if once.get(b"upgrade", b"").lower() != b"websocket":
            return self._hand_over("no Upgrade: websocket")
        tokens = {token.strip().lower() for token in once.get(b"connection", b"").split(b",")}
        if b"upgrade" not in tokens:
            return self._hand_over("no Connection: upgrade")
        if once.get(b"sec-websocket-version") != b"13":
            return self._hand_over("not Sec-WebSocket-Version: 13")
        websocket_key = once.get(b"sec-websocket-key", b"")
        if _WEBSOCKET_KEY.fullmatch(websocket_key) is None:
            return self._hand_over("no Sec-WebSocket-Key of 16 bytes")
        if once.get(b"content-length", b"0") != b"0":
            return self._hand_over("a body")
        origin = once.get(b"origin")
        if origin is not None and not origin.isascii():
            return self._hand_over("an Origin this framer does not decode")
        request = UpgradeRequest(
            app_key=key.decode(),
            path=path.decode(),
            query_items=parse_query(query.decode()) if query else [],
            websocket_key=websocket_key.decode(),
            origin=origin.decode() if origin is not None else None,
            early=early,
        )
        # Final: the bytes stay, for the general server if the caller declines the upgrade.
        self._handed_over = HandOver("upgraded or declined")
        self._head_end = -1
        return request

    def _hand_over(self, reason: str) -> HandOver:
        self._head_end = -1
        self._route = None
        self._handed_over = HandOver(reason)
        return self._handed_over
