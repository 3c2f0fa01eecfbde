"""Several users of the one node-to-node path (:meth:`ControlBus.to_node`), told apart by the
first byte of each payload.

The HTTP fallback's relay writes JSON objects, so its messages start with ``{`` (the tag
it registers, which keeps its wire format as it was); the console's start with ``C``. A
payload whose first byte no handler registered raises :class:`UnknownNodeMessage`, which
the broker counts and logs like any message it cannot act on.
"""

from __future__ import annotations

from tidings.brokers.base import ControlBus, NodeHandler


class UnknownNodeMessage(ValueError):
    """A node message with no handler for its first byte."""


class NodeMessages:
    """The control bus's one node-message handler, dispatching on the payload's first byte."""

    def __init__(self, bus: ControlBus) -> None:
        self._handlers: dict[int, NodeHandler] = {}
        bus.on_node_message(self.dispatch)

    def handle(self, tag: bytes, handler: NodeHandler) -> None:
        """Give ``handler`` every payload that starts with ``tag`` (one byte), tag included."""
        if len(tag) != 1:
            raise ValueError("a node message tag is one byte")
        self._handlers[tag[0]] = handler

    async def dispatch(self, payload: bytes) -> None:
        handler = self._handlers.get(payload[0]) if payload else None
        if handler is None:
            raise UnknownNodeMessage(
                f"node message of unknown kind {payload[:1]!r} ({len(payload)} bytes)"
            )
        await handler(payload)
