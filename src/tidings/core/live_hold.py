"""No gap between a live channel's snapshot and its live events: the hold.

A socket that subscribes to a ``private-live.`` channel must see every row change exactly
once after the rows it is first sent. The node (``tidings/live_subscriptions.py``, the
asyncio half of this module) therefore puts a :class:`LiveHold` in the hub in the socket's
place *before* it asks for the snapshot: from then on every publication for that socket
and channel is kept, in order, while the snapshot is fetched. When the snapshot arrives the
node sends it, then what was held, and puts the connection back in the hub, all in one loop
tick (nothing can be published in between). An event both in the snapshot and held is
dropped by the client, which keeps each row's version.

The hold is bounded (messages and bytes): past either bound it keeps nothing more, drops
what it held and reports the overflow once; the node then fails the subscription
(``SnapshotFailed``) rather than let one slow snapshot grow memory without limit.

Pure: no asyncio, no I/O. The hold is a hub ``Subscriber`` that is not a native-writer
``Sink``, so both writers hand it the :class:`~tidings.core.publication.Publication`.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tidings.core.publication import Publication
from tidings.protocol import messages

LIVE_PREFIX = "private-live."
SNAPSHOT_EVENT = "tidings:snapshot"
# The app settings that bound a hold, as LiveHold.overflowed names them.
HOLD_BOUNDS = ("live_hold_max_messages", "live_snapshot_max_bytes")


class SnapshotFailed(Exception):
    """A live channel's snapshot could not be had. The message is sent to the client in
    ``pusher:subscription_error`` (type ``SnapshotFailed``, status 500): it must name the
    cause and never carry a secret."""


def is_live(channel: str) -> bool:
    return channel.startswith(LIVE_PREFIX)


class LiveHold:
    """Publications for one socket on one live channel, kept until its snapshot is sent.

    ``limit_messages`` and ``limit_bytes`` bound what is kept; ``on_overflow`` is called once,
    from inside the fan-out that passed a bound (it must only schedule work, never write to
    a socket or change the hub). ``overflowed`` then names the app setting of the bound
    passed (``live_hold_max_messages`` or ``live_snapshot_max_bytes``), for the metrics.
    """

    __slots__ = (
        "socket_id",
        "channel",
        "overflowed",
        "_messages",
        "_bytes",
        "_limit_messages",
        "_limit_bytes",
        "_on_overflow",
        "_released",
    )

    def __init__(
        self,
        socket_id: str,
        channel: str,
        limit_messages: int,
        limit_bytes: int,
        on_overflow: Callable[[], object],
    ) -> None:
        self.socket_id = socket_id
        self.channel = channel
        self.overflowed: str | None = None
        self._messages: list[bytes] = []
        self._bytes = 0
        self._limit_messages = limit_messages
        self._limit_bytes = limit_bytes
        self._on_overflow = on_overflow
        self._released = False

    def __len__(self) -> int:
        return len(self._messages)

    def publish(self, publication: Publication) -> None:
        """Keep a publication's messages (the hub's ``Subscriber``)."""
        if self.overflowed or self._released:
            return
        added = publication.messages
        size = self._bytes + sum([len(m) for m in added])
        if len(self._messages) + len(added) > self._limit_messages:
            self.overflowed = HOLD_BOUNDS[0]
        elif size > self._limit_bytes:
            self.overflowed = HOLD_BOUNDS[1]
        if self.overflowed:
            self._messages = []
            self._bytes = 0
            self._on_overflow()
            return
        self._messages.extend(added)
        self._bytes = size

    def release(self) -> list[bytes]:
        """What was held, in publication order; the hold keeps nothing after this."""
        if self.overflowed:
            raise RuntimeError(f"the hold of {self.socket_id} on {self.channel} overflowed")
        self._released = True
        held, self._messages, self._bytes = self._messages, [], 0
        return held


def snapshot_message(channel: str, body: bytes, max_bytes: int) -> bytes:
    """The ``tidings:snapshot`` event for ``channel`` whose data is ``body``, the JSON
    ``{"rows": [...], "version": V}`` a provider answered.

    The body is checked once here, whoever provided it, so no client is ever sent a
    snapshot it cannot read; a bad one raises :class:`SnapshotFailed` saying what is wrong.
    """
    if len(body) > max_bytes:
        raise SnapshotFailed(f"snapshot larger than {max_bytes} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SnapshotFailed("snapshot is not valid JSON") from None
    if not isinstance(value, dict):
        raise SnapshotFailed('snapshot must be a JSON object {"rows": [...], "version": V}')
    rows, version = value.get("rows"), value.get("version")
    if not isinstance(rows, list):
        raise SnapshotFailed('snapshot needs "rows", a list')
    if not isinstance(version, int) or isinstance(version, bool):
        raise SnapshotFailed('snapshot needs "version", an integer')
    # orjson accepts only UTF-8, so decoding cannot fail; the data field is a JSON string
    # (Pusher: event data is a string), the body as the provider wrote it.
    return messages.event(SNAPSHOT_EVENT, channel, bytes(body).decode())


def snapshot_failure(channel: str, reason: str) -> bytes:
    """The ``pusher:subscription_error`` that ends a live subscription without a snapshot."""
    return messages.subscription_error(channel, "SnapshotFailed", reason, 500)
