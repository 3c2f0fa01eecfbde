"""Server-Sent Events for clients with no SDK (``docs/sse.md``), with no I/O.

``GET /app/{key}/events?channel=a&channel=b`` streams a channel's Pusher events to a plain
``new EventSource(url)``. This module holds what the stream says and reads:

- **events**: every Pusher event is one SSE ``message`` (no ``event:`` field, so
  ``onmessage`` gets them all) whose ``data:`` is the event's JSON as a stock Pusher client
  receives it: ``{"event": ..., "channel": ..., "data": ...}``;
- **ids**: the ``id:`` of an event is the position of every channel of the stream that keeps
  history (:class:`StreamId`); the browser sends the last one back as ``Last-Event-ID`` when
  it reconnects, and the server replays what the stream missed;
- **tokens**: a private channel needs a token the app mints with its secret
  (:func:`sign_token`), since an EventSource cannot run Pusher's auth round trip.

The format of ids (version 1)::

    1.<tag>-<epoch>-<offset>.<tag>-<epoch>-<offset>...

one part per channel with history, ``tag`` the first 6 hex digits of SHA-256 of the channel
name (so an id names its channels without spelling them, and a stream whose channel list
changed still resumes the channels it shares with the id). Only URL-safe characters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from tidings.protocol.recovery import MAX_EPOCH_LENGTH, MAX_OFFSET

MAX_CHANNELS = 10  # per stream: an SSE stream is one page's few feeds, not a multiplexer
MAX_TOKEN_LENGTH = 128  # "<expires>.<64 hex digits>" is ~75 characters
MAX_ID_LENGTH = 1024  # a Last-Event-ID longer than this is not one of ours
RETRY_MS = 2000  # EventSource's reconnection delay, sent as ``retry:``
ID_VERSION = "1"
TAG_LENGTH = 6

# Sent first, so the headers and a first chunk leave at once (the browser fires ``open``):
# a comment, then the reconnection delay.
PRELUDE = b": tidings\n\nretry: %d\n\n" % RETRY_MS
PING = b": ping\n\n"

_EPOCH = re.compile(rf"\A[A-Za-z0-9_\-]{{1,{MAX_EPOCH_LENGTH}}}\Z")
_OFFSET = re.compile(r"\A\d{1,16}\Z")
_TAG = re.compile(rf"\A[0-9a-f]{{{TAG_LENGTH}}}\Z")
_TOKEN = re.compile(r"\A(\d{1,12})\.([0-9a-f]{64})\Z")


# -- what the stream says -------------------------------------------------------------------


def event(message: bytes, event_id: str | None = None) -> bytes:
    """One SSE message carrying a Pusher message (JSON) as its data.

    Pusher JSON has no raw line breaks (JSON escapes them inside strings), but a break
    between tokens is legal JSON, and SSE would end the field there: each line becomes a
    ``data:`` line of its own, which the browser joins back with ``\\n``."""
    head = b"" if event_id is None else b"id: %s\n" % event_id.encode()
    if b"\n" in message or b"\r" in message:
        lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join([b"data: %s\n" % line for line in lines]) + b"\n"
    return b"%sdata: %s\n\n" % (head, message)


def id_only(event_id: str) -> bytes:
    """A block with an ``id:`` and no data: the browser records it as the last event id
    (HTML: the id is set before an empty data buffer is discarded) and fires no event."""
    return b"id: %s\n\n" % event_id.encode()


# -- the positions in an id -----------------------------------------------------------------


def tag(channel: str) -> str:
    return hashlib.sha256(channel.encode()).hexdigest()[:TAG_LENGTH]


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a stream stood on one channel: the history's epoch and the last offset sent."""

    epoch: str
    offset: int


class StreamId:
    """The positions of a stream's channels with history, as one ``id:``."""

    __slots__ = ("_marks", "_tags")

    def __init__(self) -> None:
        self._marks: dict[str, Mark] = {}  # by channel, kept in the stream's channel order
        self._tags: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._marks)

    def set(self, channel: str, epoch: str, offset: int) -> None:
        if channel not in self._tags:
            self._tags[channel] = tag(channel)
        self._marks[channel] = Mark(epoch, offset)

    def mark(self, channel: str) -> Mark | None:
        return self._marks.get(channel)

    def forget(self, channel: str) -> None:
        self._marks.pop(channel, None)

    def advance(self, channel: str, offset: int) -> bool:
        """A message at ``offset`` went out on ``channel``; False if it has no position."""
        mark = self._marks.get(channel)
        if mark is None:
            return False
        self._marks[channel] = Mark(mark.epoch, offset)
        return True

    def encode(self) -> str:
        parts = [f"{self._tags[c]}-{m.epoch}-{m.offset}" for c, m in sorted(self._marks.items())]
        return ".".join([ID_VERSION, *parts])


class BadId(ValueError):
    """A Last-Event-ID that is not one this server version wrote."""


def decode_id(text: str, channels: Iterable[str]) -> dict[str, Mark]:
    """The marks an id holds for ``channels`` (those it does not name are absent).

    Raises :class:`BadId` for anything that is not a version-1 id, or an id whose tags
    cannot tell two of ``channels`` apart."""
    if len(text) > MAX_ID_LENGTH or not text.isascii():
        raise BadId("too long")
    version, _, rest = text.partition(".")
    if version != ID_VERSION:
        raise BadId(f"version {version!r}")
    by_tag: dict[str, Mark] = {}
    for part in rest.split(".") if rest else []:
        tag_text, _, tail = part.partition("-")
        epoch, _, offset = tail.rpartition("-")
        if not (_TAG.match(tag_text) and _EPOCH.match(epoch) and _OFFSET.match(offset)):
            raise BadId(f"part {part!r}")
        if int(offset) > MAX_OFFSET or tag_text in by_tag:
            raise BadId(f"part {part!r}")
        by_tag[tag_text] = Mark(epoch, int(offset))
    wanted = {channel: tag(channel) for channel in channels}
    if len(set(wanted.values())) != len(wanted):
        raise BadId("two channels share a tag")
    return {c: by_tag[t] for c, t in wanted.items() if t in by_tag}


# -- tokens for private channels --------------------------------------------------------------


def token_string(channels: Iterable[str], expires: int) -> str:
    """What a token signs: the stream's private channels, sorted, and its expiry."""
    return "\n".join(["sse", *sorted(set(channels)), str(expires)])


def sign_token(secret: str, channels: Iterable[str], expires: int) -> str:
    """``<expires>.<hex HMAC-SHA256 of token_string>``; ``expires`` in Unix seconds."""
    signature = hmac.new(
        secret.encode(), token_string(channels, expires).encode(), hashlib.sha256
    ).hexdigest()
    return f"{expires}.{signature}"


def token_error(secret: str, channels: Iterable[str], token: str, now: float) -> str | None:
    """Why ``token`` does not open ``channels`` (the stream's private channels) at ``now``,
    or None. The signature is compared in constant time, and before the expiry is looked
    at, so a forged token learns nothing from which check failed."""
    if len(token) > MAX_TOKEN_LENGTH:
        return "token too long"
    found = _TOKEN.match(token)
    if found is None:
        return "token must be <expires>.<hex HMAC-SHA256>"
    expires = int(found.group(1))
    expected = sign_token(secret, channels, expires)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return "token does not sign these private channels"
    if now >= expires:
        return "token expired"
    return None


# -- reading what the node sends -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A Pusher message as the SSE edge reads it: its event, channel, offset in the
    channel's history (None: not stored) and the bytes for ``data:``, without the
    ``"tidings"`` key recovery adds (the offset is in the stream's id instead)."""

    event: str
    channel: str | None
    offset: int | None
    data: bytes
    # subscription_succeeded of a channel with history: its position, and whether the
    # missed events follow (None: no recovery was asked)
    position: Mark | None = None
    recovered: bool | None = None


def read(message: bytes) -> Outgoing:
    """Read one Pusher message the node hands to a connection."""
    parsed = orjson.loads(message)
    name = parsed.get("event")
    channel = parsed.get("channel")
    extra = parsed.get("tidings")
    offset = extra.get("offset") if isinstance(extra, dict) else None
    data = message
    if isinstance(offset, int):
        suffix = b',"tidings":{"offset":%d}}' % offset
        if message.endswith(suffix):
            data = message[: -len(suffix)] + b"}"
        else:
            del parsed["tidings"]
            data = orjson.dumps(parsed)
    else:
        offset = None
    position = recovered = None
    if name == "pusher_internal:subscription_succeeded" and isinstance(parsed.get("data"), str):
        succeeded = orjson.loads(parsed["data"])
        where = succeeded.get("tidings") if isinstance(succeeded, dict) else None
        if isinstance(where, dict):
            position = Mark(str(where["epoch"]), int(where["offset"]))
            found = succeeded.get("recovered")
            recovered = found if isinstance(found, bool) else None
    return Outgoing(
        name if isinstance(name, str) else "",
        channel if isinstance(channel, str) else None,
        offset,
        data,
        position,
        recovered,
    )
