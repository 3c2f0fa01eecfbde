"""What the node and its edges record for the console, for one app on one node.

A node holds a :class:`Tap` for an app only while someone watches that app (a console
stream on any node of the cluster); otherwise the app's tap is ``None`` and every hook is
that one attribute check, with nothing formatted and nothing allocated. Fan-out is never
tapped per delivery: the stats read the counters once a second (``watch.py``).

While watched, a record is built only once the rate limit has let it through: past
``rate`` records in one second the rest are only counted, and reported as one ``dropped``
record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

Record = dict[str, Any]
RecordSink = Callable[[Record], None]

DEFAULT_RATE = 200  # records per second per app per node
MAX_DATA = 1000  # characters of an event's data shown


def _cut(data: str) -> tuple[str, bool]:
    if len(data) > MAX_DATA:
        return data[:MAX_DATA], True
    return data, False


class Tap:
    """One watched app's records on this node, rate-limited, handed to ``sink``."""

    __slots__ = ("app_id", "node_id", "rate", "dropped", "_sink", "_clock", "_second", "_count")

    def __init__(
        self,
        app_id: str,
        node_id: str,
        sink: RecordSink,
        rate: int = DEFAULT_RATE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self.node_id = node_id
        self.rate = rate
        self.dropped = 0  # records refused by the rate limit, not yet reported
        self._sink = sink
        self._clock = clock
        self._second = 0
        self._count = 0

    def _admit(self) -> int | None:
        """The record's time (ms since the epoch), or None when over the rate."""
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._count = 0
        if self._count >= self.rate:
            self.dropped += 1
            return None
        self._count += 1
        return int(now * 1000)

    def _emit(self, kind: str, at: int, fields: Record) -> None:
        self._sink({"type": kind, "time": at, "node": self.node_id, **fields})

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped

    # -- one method per record type ----------------------------------------------------------

    def connection(self, socket_id: str, transport: str) -> None:
        at = self._admit()
        if at is not None:
            self._emit("connection", at, {"socket_id": socket_id, "transport": transport})

    def disconnection(self, socket_id: str, by: str, code: int | None, reason: str) -> None:
        at = self._admit()
        if at is not None:
            fields = {"socket_id": socket_id, "by": by, "code": code, "reason": reason}
            self._emit("disconnection", at, fields)

    def subscribed(self, socket_id: str, channel: str, user_id: str | None) -> None:
        at = self._admit()
        if at is not None:
            fields: Record = {"socket_id": socket_id, "channel": channel}
            if user_id is not None:
                fields["user_id"] = user_id
            self._emit("subscribed", at, fields)

    def unsubscribed(self, socket_id: str, channel: str) -> None:
        at = self._admit()
        if at is not None:
            self._emit("unsubscribed", at, {"socket_id": socket_id, "channel": channel})

    def refused(
        self, socket_id: str | None, channel: str | None, code: int | None, reason: str
    ) -> None:
        at = self._admit()
        if at is not None:
            fields = {"socket_id": socket_id, "channel": channel, "code": code, "reason": reason}
            self._emit("refused", at, fields)

    def refused_message(self, socket_id: str, message: bytes) -> None:
        """A ``pusher:error`` or ``pusher:subscription_error`` sent to a client, with the
        reason the client got."""
        body = orjson.loads(message)
        data = body.get("data")
        data = data if isinstance(data, dict) else {}
        if body.get("event") == "pusher:subscription_error":
            code, reason = data.get("status"), data.get("error")
        else:
            code, reason = data.get("code"), data.get("message")
        channel = body.get("channel")
        self.refused(
            socket_id,
            channel if isinstance(channel, str) else None,
            code if isinstance(code, int) else None,
            reason if isinstance(reason, str) else "",
        )

    def api_message(
        self,
        channels: list[str],
        event: str,
        data: str,
        socket_id: str | None,
        source: str,
    ) -> None:
        at = self._admit()
        if at is not None:
            shown, truncated = _cut(data)
            fields = {
                "channels": channels,
                "event": event,
                "data": shown,
                "truncated": truncated,
                "socket_id": socket_id,
                "source": source,
            }
            self._emit("api_message", at, fields)

    def client_event(
        self, channel: str, event: str, data: str, socket_id: str, user_id: str | None
    ) -> None:
        at = self._admit()
        if at is not None:
            shown, truncated = _cut(data)
            fields: Record = {
                "channel": channel,
                "event": event,
                "data": shown,
                "truncated": truncated,
                "socket_id": socket_id,
            }
            if user_id is not None:
                fields["user_id"] = user_id
            self._emit("client_event", at, fields)

    def webhook(
        self, status: str, url: str, events: list[str], http_status: int | None, error: str | None
    ) -> None:
        at = self._admit()
        if at is not None:
            fields = {
                "status": status,
                "url": url,
                "events": events,
                "http_status": http_status,
                "error": error,
            }
            self._emit("webhook", at, fields)
