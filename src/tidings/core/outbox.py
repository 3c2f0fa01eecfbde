"""A bounded queue of messages for a connection that is not always attached.

An HTTP fallback session receives messages between polls; they wait here in order. The
queue is bounded in bytes: past the limit the session is a slow consumer and is closed
(4100), never allowed to grow without bound.
"""

from __future__ import annotations

from collections import deque


class Outbox:
    __slots__ = ("_messages", "_bytes", "limit")

    def __init__(self, limit: int) -> None:
        self._messages: deque[bytes] = deque()
        self._bytes = 0
        self.limit = limit

    def push(self, message: bytes) -> bool:
        """Queue a message; False (and nothing queued) when it would pass the limit."""
        if self._bytes + len(message) > self.limit:
            return False
        self._messages.append(message)
        self._bytes += len(message)
        return True

    def drain(self) -> list[bytes]:
        """Everything queued, oldest first, leaving the outbox empty."""
        messages = list(self._messages)
        self._messages.clear()
        self._bytes = 0
        return messages

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._messages)
