"""The console's Server-Sent Events listeners on this node.

Each :class:`Stream` has a bounded queue: a listener that reads slower than records come
loses the oldest ones, counted and reported to it as one ``dropped`` record, so a slow
browser never holds memory or slows anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson

from tidings.console.tap import Record

MAX_QUEUE = 2000  # records waiting for one listener
ALWAYS_SHOWN = frozenset({"stats", "dropped"})  # whatever the filters


def frame(record: Record) -> bytes:
    """One SSE message: ``data: <JSON>`` and a blank line (no ``event:`` field)."""
    return b"data: " + orjson.dumps(record) + b"\n\n"


class Stream:
    """One listener of one app, with its exact-match filters (empty: everything)."""

    __slots__ = ("app_id", "session_id", "channel", "event", "dropped", "closed", "_queue", "_wake")

    def __init__(
        self,
        app_id: str,
        session_id: str,
        channel: str = "",
        event: str = "",
        limit: int = MAX_QUEUE,
    ) -> None:
        self.app_id = app_id
        self.session_id = session_id
        self.channel = channel
        self.event = event
        self.dropped = 0
        self.closed = False
        self._queue: deque[bytes] = deque(maxlen=limit)
        self._wake = asyncio.Event()

    def wants(self, record: Record) -> bool:
        if record["type"] in ALWAYS_SHOWN:
            return True
        if self.channel and not (
            record.get("channel") == self.channel or self.channel in record.get("channels", ())
        ):
            return False
        return not self.event or record.get("event") == self.event

    def offer(self, record: Record, encoded: bytes) -> None:
        if self.closed or not self.wants(record):
            return
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1  # the deque drops the oldest
        queue.append(encoded)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Until a record arrives, the stream closes or ``timeout`` passes."""
        if self._queue or self.closed:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    def take(self, node_id: str) -> bytes:
        """Everything queued, as SSE messages, after a ``dropped`` record if any were."""
        parts = list(self._queue)
        self._queue.clear()
        if self.dropped:
            notice = {
                "type": "dropped",
                "time": int(time.time() * 1000),
                "node": node_id,
                "count": self.dropped,
            }
            self.dropped = 0
            parts.insert(0, frame(notice))
        return b"".join(parts)
