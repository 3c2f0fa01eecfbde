"""What Tidings nodes write on the Redis bus, and how a node refuses everything else.

Anyone who can reach Redis can PUBLISH on the channels a node listens to. A message this
module cannot decode into what a node itself would have written is dropped and counted by
reason, never acted on and never allowed to stop the listener: one bad message must not
deafen a node.

Publications (``{prefix}#{<app>#<channel>}``): ``origin NUL exclude NUL message``, where the
message is one Pusher event (a JSON object with an ``event`` name), unframed: each edge
frames it for its own clients. It reaches every subscriber's stream as it is, so a message
that is not exactly that would corrupt them: it is checked before anything is written.

Control messages (``{prefix}#{control}``): a JSON object ``{"o": origin, "a": app id, "k":
kind, "u": user id, "c": channel, "d": data}``, every key always present (nodes of earlier
releases read them all). :data:`CONTROL_KINDS` maps each kind to its class in
``control.py``, and :data:`WIRE_FIELDS` each field of those classes to its key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, NamedTuple

import orjson

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
from tidings.brokers.history import MAX_EPOCH_LENGTH, Position

log = logging.getLogger("tidings.redis")

DropReason = Literal["malformed", "bad_frame", "unknown_kind", "handler_error"]
"""Why a bus message was dropped (the ``reason`` label of the drop counter):
``malformed`` (not the envelope Tidings writes), ``bad_frame`` (a publication whose message
is not a Pusher event; the label is older than unframed messages and kept for dashboards),
``unknown_kind`` (a control message of a kind
no Tidings node sends), ``handler_error`` (decoded, but acting on it raised)."""

DROP_REASONS: tuple[DropReason, ...] = ("malformed", "bad_frame", "unknown_kind", "handler_error")

CONTROL_KINDS: dict[str, type[ControlMessage]] = {
    "terminate": Terminate,
    "online": UserOnline,
    "offline": UserOffline,
    "member_added": MemberAdded,
    "member_removed": MemberRemoved,
    "recount": Recount,
    "console": Console,
}
KIND_OF: dict[type[ControlMessage], str] = {cls: kind for kind, cls in CONTROL_KINDS.items()}

WIRE_FIELDS = {"user_id": "u", "channel": "c", "user_info": "d", "data": "d"}
"""The key of each control message field on the bus (``d``: the one free-form string)."""

LOG_INTERVAL = 60.0  # seconds between two log lines about drops of one reason
POSITIONED = b"\x01"  # the first byte of a publication that carries its position
MAX_OFFSET_DIGITS = 18  # an offset always fits in a signed 64-bit Redis integer


class Dropped(Exception):
    """A bus message this node will not act on."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Publication(NamedTuple):
    """A publication from another node (a tuple: decoded once per publication per node)."""

    origin: str  # the publishing node's id
    exclude: str | None  # Pusher: the socket_id that must not receive it
    message: bytes  # one Pusher event (JSON)
    position: Position | None = None  # its place in the channel's history, if it keeps one


@dataclass(frozen=True, slots=True)
class ControlEnvelope:
    origin: str
    app_id: str
    message: ControlMessage


def encode_publication(origin: str, exclude: str | None, message: bytes) -> bytes:
    """The one encoding of a publication on the bus: the nodes' broker (``ClusterRedis``)
    and the publish-only client both write it through here."""
    return b"".join((origin.encode(), b"\x00", (exclude or "").encode(), b"\x00", message))


def encode_positioned(
    position: Position, origin: str, exclude: str | None, message: bytes
) -> bytes:
    """A publication with its position, as ``lua/history_publish.lua`` writes it (the Lua
    script is the writer; this is its specification, for tests and readers)."""
    header = b"%s%s\x00%d\x00" % (POSITIONED, position.epoch.encode(), position.offset)
    return header + encode_publication(origin, exclude, message)


def decode_publication(data: bytes) -> Publication:
    if data[:1] == POSITIONED:
        position, rest = _decode_position(data)
        return _decode_plain(rest)._replace(position=position)
    return _decode_plain(data)


def _decode_position(data: bytes) -> tuple[Position, bytes]:
    epoch, _, rest = data[1:].partition(b"\x00")
    offset, found, rest = rest.partition(b"\x00")
    if not found or not 0 < len(epoch) <= MAX_EPOCH_LENGTH or not epoch.isalnum():
        raise Dropped("malformed", "no alphanumeric epoch in a positioned publication")
    if not 0 < len(offset) <= MAX_OFFSET_DIGITS or not offset.isdigit() or offset[:1] == b"0":
        raise Dropped("malformed", "no positive offset in a positioned publication")
    return Position(epoch.decode(), int(offset)), rest


def _decode_plain(data: bytes) -> Publication:
    origin, _, rest = data.partition(b"\x00")
    exclude, found, message = rest.partition(b"\x00")
    if not found or not origin or not origin.isascii() or not exclude.isascii():
        raise Dropped("malformed", "no ASCII origin/exclude header")
    if origin[:1] == POSITIONED:
        raise Dropped("malformed", "a second position where the origin belongs")
    check_message(message)
    return Publication(origin.decode(), exclude.decode() or None, message)


def check_message(message: bytes) -> None:
    """Raise :class:`Dropped` unless ``message`` is what ``messages.event(...)`` builds: a
    JSON object with an ``event`` name (so valid UTF-8, which a browser requires of a text
    frame, RFC 6455 8.1)."""
    try:
        body = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise Dropped("bad_frame", "message is not JSON") from None
    if type(body) is not dict or type(body.get("event")) is not str:
        raise Dropped("bad_frame", "message is not a Pusher event")


def encode_control(origin: str, app_id: str, message: ControlMessage) -> bytes:
    body = {"o": origin, "a": app_id, "k": KIND_OF[type(message)], "u": "", "c": "", "d": ""}
    for part in dataclass_fields(message):
        body[WIRE_FIELDS[part.name]] = getattr(message, part.name)
    return orjson.dumps(body)


def decode_control(data: bytes) -> ControlEnvelope:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Dropped("malformed", "control message is not JSON") from None
    if not isinstance(body, dict):
        raise Dropped("malformed", "control message is not a JSON object")
    fields = {name: body.get(name, "") for name in "oakucd"}
    if not all(isinstance(value, str) for value in fields.values()):
        raise Dropped("malformed", "a control message field is not a string")
    if not fields["o"] or not fields["a"]:
        raise Dropped("malformed", "control message without origin or app")
    kind = fields["k"]
    cls = CONTROL_KINDS.get(kind)
    if cls is None:
        raise Dropped("unknown_kind", f"control message of unknown kind {kind[:40]!r}")
    if cls is MemberAdded and fields["d"]:
        try:
            orjson.loads(fields["d"])
        except orjson.JSONDecodeError:
            raise Dropped("malformed", "member_added user_info is not JSON") from None
    values = {part.name: fields[WIRE_FIELDS[part.name]] for part in dataclass_fields(cls)}
    return ControlEnvelope(fields["o"], fields["a"], cls(**values))


@dataclass(slots=True)
class BusStats:
    """What the listener refused or survived, for ``/metrics`` (plain ints: cheap).

    Each drop reason is logged at most once per ``interval`` seconds, with the number of
    drops not logged since, so a flood of garbage costs one log line a minute."""

    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    listener_restarts: int = 0
    interval: float = LOG_INTERVAL
    clock: Callable[[], float] = time.monotonic
    _next_log: dict[str, float] = field(default_factory=dict)
    _unlogged: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: DropReason, topic: bytes, size: int, why: Any) -> None:
        """Count a dropped message; log it unless this reason was logged recently.

        The message itself is never logged (it may carry anything), only where it came
        from, its size and why it was refused."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        now = self.clock()
        if now < self._next_log.get(reason, 0.0):
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._next_log[reason] = now + self.interval
        unlogged = self._unlogged.pop(reason, 0)
        log.warning(
            "dropped a bus message on %s (%d bytes, %s): %s%s",
            topic[:120].decode(errors="replace"),
            size,
            reason,
            why,
            f" ({unlogged} more dropped for this reason since the last report)" if unlogged else "",
            exc_info=why if isinstance(why, BaseException) and reason == "handler_error" else None,
        )
