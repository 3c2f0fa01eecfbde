"""Client-to-server WebSocket frames, sans I/O: bytes in, messages and verdicts out.

:class:`FrameReader` is the server side of RFC 6455 after the handshake, for an endpoint
that negotiates no extension (permessage-deflate stays off: see docs/conformance.md). Feed it
what the socket delivered; it returns complete events in order:

- :class:`Text` and :class:`Binary`: whole messages, reassembled from their fragments;
- :class:`Ping`, :class:`Pong`: control frames, which may arrive between fragments;
- :class:`CloseReceived`: the peer's close frame; nothing is read after it;
- :class:`Failed`: the peer broke the protocol or a limit; the edge closes with ``code``
  and nothing is read after it (RFC 6455 7.1.7, "_Fail the WebSocket Connection_").

It holds at most one message (``max_message`` bytes) plus one frame header: a frame that
would take a message past the limit fails with 1009 from its header, before its payload
arrives. Idle, a reader is a handful of slots and no buffer.

Two implementations of that contract: :class:`PyFrameReader` here, and
``tidings._wsframe.FrameReader`` in C (``src/tidings/_wsframe.c``), which returns the same
events, codes and reasons and is checked against this one by the tests and the fuzz target.
:data:`FrameReader` is the C one when it was built, unless ``TIDINGS_WS_READER=python``
(docs/benchmarks.md, issue 17 item 1, has the numbers behind the choice).
"""

from __future__ import annotations

import codecs
import importlib
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

# RFC 6455 5.2 opcodes.
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# RFC 6455 7.4.1 close codes used here.
NORMAL = 1000
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
NO_STATUS = 1005  # "no code in the close frame"; never sent on the wire


@dataclass(frozen=True, slots=True)
class Text:
    data: str


@dataclass(frozen=True, slots=True)
class Binary:
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame: ``code`` is 1005 when it carried none."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The connection must be failed: close with ``code`` (1002, 1007 or 1009)."""

    code: int
    reason: str


Event = Text | Binary | Ping | Pong | CloseReceived | Failed


class ProtocolViolation(Exception):
    """Raised inside the reader, turned into :class:`Failed` at :meth:`FrameReader.feed`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: codes a peer may send (1004-1006 and 1015 are reserved, 1016-2999
    unassigned or for extensions we do not run, 5000 and up undefined)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 5.3: XOR with the 4-byte key; one big-integer XOR, done in C by CPython."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


_utf8 = codecs.getincrementaldecoder("utf-8")


class PyFrameReader:
    """One connection's incoming frames, in pure Python; see the module docstring."""

    __slots__ = ("max_message", "_buffer", "_opcode", "_fragments", "_size", "_decoder", "_done")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message  # inclusive: a message of exactly this size passes
        # Unparsed bytes: b"" between frames (nearly always), a bytearray while one is partial.
        self._buffer: bytes | bytearray = b""
        self._opcode: int | None = None  # the fragmented message in progress, if any
        self._fragments: list[bytes] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None  # fragmented text only
        self._done = False  # a close frame or a failure was returned: ignore the rest

    def feed(self, data: bytes) -> list[Event]:
        """Parse what arrived; returns the complete events, in order."""
        if self._done:
            return []
        if self._buffer:  # a frame is incomplete: append in place (a big frame in many reads)
            self._buffer += data
            buffer = self._buffer
        else:
            buffer = data
        events: list[Event] = []
        pos = 0
        try:
            while not self._done:
                parsed = self._frame(buffer, pos, events)
                if parsed == pos:
                    break
                pos = parsed
        except ProtocolViolation as violation:
            self._done = True
            self._release()
            events.append(Failed(violation.code, violation.reason))
            return events
        if self._done or pos == len(buffer):
            self._buffer = b""
        elif buffer is self._buffer and isinstance(buffer, bytearray):  # ours: cut in place
            del buffer[:pos]
        else:  # the caller's bytes (or bytearray, which is not ours to keep): copy the rest
            self._buffer = bytearray(buffer[pos:])
        return events

    def _frame(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        """Parse one frame at ``pos``; returns the position after it, or ``pos`` when the
        frame is not complete yet."""
        end = len(buf)
        if end - pos < 2:
            return pos
        first, second = buf[pos], buf[pos + 1]
        fin = first & 0x80
        opcode = first & 0x0F
        if first & 0x70:
            # RFC 6455 5.2: RSV1-3 must be 0 unless an extension defines them; none is.
            raise ProtocolViolation(PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            # RFC 6455 5.1: the server MUST close on an unmasked client frame.
            raise ProtocolViolation(PROTOCOL_ERROR, "unmasked client frame")
        length = second & 0x7F
        header = 2
        if opcode >= CLOSE:
            if opcode > PONG:
                raise ProtocolViolation(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            # RFC 6455 5.5: control frames are never fragmented and carry <= 125 bytes.
            if not fin:
                raise ProtocolViolation(PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise ProtocolViolation(PROTOCOL_ERROR, "control frame too long")
        elif opcode > BINARY:
            raise ProtocolViolation(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif length == 126:
            if end - pos < 4:
                return pos
            (length,) = struct.unpack_from("!H", buf, pos + 2)
            header = 4
        elif length == 127:
            if end - pos < 10:
                return pos
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            if length >> 63:
                raise ProtocolViolation(PROTOCOL_ERROR, "payload length has its top bit set")
            header = 10
        if opcode < CLOSE:
            self._check_sequence(opcode)
            if self._size + length > self.max_message:
                # Before the payload arrives: an oversized message is never buffered.
                raise ProtocolViolation(MESSAGE_TOO_BIG, "message too big")
        start = pos + header + 4
        if end < start + length:
            return pos
        mask = buf[start - 4 : start]
        payload = unmask(bytes(buf[start : start + length]), bytes(mask))
        if opcode >= CLOSE:
            events.append(self._control(opcode, payload))
        else:
            self._data(opcode, fin, payload, events)
        return start + length

    def _check_sequence(self, opcode: int) -> None:
        # RFC 6455 5.4: a continuation needs a message in progress; a new message must not
        # start inside one.
        if opcode == CONTINUATION and self._opcode is None:
            raise ProtocolViolation(PROTOCOL_ERROR, "continuation frame without a message")
        if opcode != CONTINUATION and self._opcode is not None:
            raise ProtocolViolation(PROTOCOL_ERROR, "new message inside a fragmented one")

    def _data(self, opcode: int, fin: int, payload: bytes, events: list[Event]) -> None:
        if fin and opcode != CONTINUATION:  # the common case: one frame, one message
            events.append(Text(_decode(payload)) if opcode == TEXT else Binary(payload))
            return
        if opcode != CONTINUATION:
            self._opcode = opcode
            if opcode == TEXT:
                self._decoder = _utf8()
        if self._decoder is not None:
            # Validate as fragments arrive, so bad UTF-8 fails fast (Autobahn 6.4).
            try:
                self._decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                raise ProtocolViolation(INVALID_DATA, "invalid UTF-8 in a text message") from None
        self._fragments.append(payload)
        self._size += len(payload)
        if fin:
            whole = b"".join(self._fragments)
            text = self._opcode == TEXT
            self._release()
            # Already validated: decoding again is the cheapest way to the str.
            events.append(Text(whole.decode()) if text else Binary(whole))

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        self._done = True
        self._release()
        if not payload:
            return CloseReceived(NO_STATUS, "")
        if len(payload) == 1:
            raise ProtocolViolation(PROTOCOL_ERROR, "close frame with a one-byte payload")
        (code,) = struct.unpack_from("!H", payload)
        if not valid_close_code(code):
            raise ProtocolViolation(PROTOCOL_ERROR, f"invalid close code {code}")
        return CloseReceived(code, _decode(payload[2:]))

    def _release(self) -> None:
        self._opcode = None
        self._fragments = []
        self._size = 0
        self._decoder = None


def _decode(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(INVALID_DATA, "invalid UTF-8") from None


def _native_reader() -> type[PyFrameReader] | None:
    """The C reader, bound to this module's event classes; None when it is not built."""
    try:
        _wsframe = importlib.import_module("tidings._wsframe")
    except ImportError:  # built without a C compiler
        return None
    _wsframe.setup(Text, Binary, Ping, Pong, CloseReceived, Failed)
    reader: type[PyFrameReader] = _wsframe.FrameReader
    return reader


def _chosen_reader(native: type[PyFrameReader] | None) -> type[PyFrameReader]:
    """The C reader when built, unless ``TIDINGS_WS_READER=python``."""
    choice = os.environ.get("TIDINGS_WS_READER", "native")
    if choice not in ("native", "python"):
        raise ValueError(f"TIDINGS_WS_READER must be 'native' or 'python', not {choice!r}")
    return native if native is not None and choice == "native" else PyFrameReader


if TYPE_CHECKING:
    NativeFrameReader: type[PyFrameReader] | None = None
    FrameReader = PyFrameReader
else:
    NativeFrameReader = _native_reader()  # built or not, whatever FrameReader is
    FrameReader = _chosen_reader(NativeFrameReader)


def describe() -> str:
    """Which reader :data:`FrameReader` is, for the startup log."""
    if FrameReader is PyFrameReader:
        return "pure Python (tidings._wsframe not built, or TIDINGS_WS_READER=python)"
    return "native (tidings._wsframe)"
