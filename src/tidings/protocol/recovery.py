"""The Tidings recovery extension on the wire (``docs/recovery.md``), with no I/O.

A client opts in per subscription with a ``tidings`` object in the ``pusher:subscribe``
data: ``{"v": 1}``, or ``{"v": 1, "recover": {"epoch", "offset", "socket_id"}}`` to get
what it missed since ``offset``. On a channel with history the server then:

- adds ``"tidings": {"epoch", "offset"}`` (and ``"recovered"`` when asked) to the data of
  ``pusher_internal:subscription_succeeded``;
- adds ``"tidings": {"offset": N}`` as the last top-level key of every event it sends that
  socket (pusher-js drops unknown top-level keys, so handlers see the usual event);
- sends ``tidings:unrecovered`` when it cannot replay every missed event.

A subscription without the field is a stock Pusher subscription: nothing here touches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.protocol import messages
from tidings.protocol.errors import ErrorCode, ProtocolError

VERSION = 1
UNRECOVERED_EVENT = "tidings:unrecovered"
# An epoch is the history store's short random string; a socket id is Pusher's "1234.5678".
MAX_EPOCH_LENGTH = 32
MAX_OFFSET = 2**53 - 1  # what a JavaScript number holds exactly
_SOCKET_ID = re.compile(r"\d{1,20}\.\d{1,20}")


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the client was: the stream ``epoch`` and the last ``offset`` it received, on
    the socket ``socket_id`` (events that socket sent are not replayed to it)."""

    epoch: str
    offset: int
    socket_id: str | None


@dataclass(frozen=True, slots=True)
class OptIn:
    """A subscription that asked for positions, and for recovery when ``resume`` is set."""

    resume: Resume | None = None


def _invalid(problem: str) -> ProtocolError:
    return ProtocolError(f"pusher:subscribe: tidings {problem}", ErrorCode.INVALID_TIDINGS)


def opt_in(raw: object) -> OptIn | None:
    """The ``tidings`` field of a subscribe (None: absent, a stock subscription).

    Raises :class:`ProtocolError` (4303, connection kept) naming what is wrong; keys this
    version does not know are ignored, so a newer client still subscribes."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _invalid("must be an object")
    version = raw.get("v")
    if version != VERSION or isinstance(version, bool):
        raise _invalid(f"version must be {VERSION}")
    recover = raw.get("recover")
    if recover is None:
        return OptIn()
    if not isinstance(recover, dict):
        raise _invalid("recover must be an object")
    epoch, offset, socket_id = recover.get("epoch"), recover.get("offset"), recover.get("socket_id")
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise _invalid(f"recover.epoch must be a string of 1 to {MAX_EPOCH_LENGTH} characters")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise _invalid(f"recover.offset must be an integer from 0 to {MAX_OFFSET}")
    if socket_id is not None and (
        not isinstance(socket_id, str) or _SOCKET_ID.fullmatch(socket_id) is None
    ):
        raise _invalid("recover.socket_id must be a socket id such as 1234.5678")
    return OptIn(Resume(epoch, offset, socket_id))


def positioned(message: bytes, offset: int) -> bytes:
    """``message`` (a JSON object) with ``"tidings":{"offset":N}`` as its last key.

    A splice, not a re-encoding: the message's own bytes are kept as they are, so every
    other key reads exactly as a stock subscriber gets it. The message is a Pusher event
    (never ``{}``); whitespace after its closing brace, which JSON allows and the bus
    accepts, is dropped first."""
    return b'%s,"tidings":{"offset":%d}}' % (message.rstrip()[:-1], offset)


def succeeded_data(base: dict[str, Any], epoch: str, offset: int, recovered: bool | None) -> str:
    """The data of ``subscription_succeeded`` for an opted-in subscription: ``base`` (``{}``,
    or ``{"presence": ...}``) plus the channel's position and, when asked, ``recovered``."""
    data = dict(base)
    data["tidings"] = {"epoch": epoch, "offset": offset}
    if recovered is not None:
        data["recovered"] = recovered
    return messages.dumps(data)


def unrecovered(channel: str, epoch: str, offset: int) -> bytes:
    """The event that tells an app to re-fetch: it missed events it will never get."""
    data = orjson.dumps({"epoch": epoch, "offset": offset}).decode()
    return messages.event(UNRECOVERED_EVENT, channel, data)
