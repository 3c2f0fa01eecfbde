"""Control messages and node-to-node payloads over Redis pub/sub.

Control messages go to ``{prefix}#{control}``, which every node hears; a node skips its
own (it ran them before publishing). Payloads to one node go to ``{prefix}#node#{id}``.
Both are sharded when publications are (``redis_sharded``, always on Redis Cluster): one
slot each, so Redis Cluster does not broadcast them to every shard. At most once, like all
Redis pub/sub.
"""

from __future__ import annotations

import inspect

from tidings.brokers.base import Control, NodeHandler
from tidings.brokers.bus import decode_control
from tidings.brokers.control import ControlMessage
from tidings.brokers.redis.link import RedisLink


class RedisControlBus:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.control: Control | None = None  # set while the broker runs
        self._node_handler: NodeHandler | None = None

    async def send(self, app_id: str, message: ControlMessage) -> None:
        await self.run_here(app_id, message)
        await self._link.call(lambda: self.publish_remote(app_id, message), lambda: None)

    async def to_node(self, node_id: str, payload: bytes) -> None:
        if node_id == self._link.node_id:
            await self.node_message(payload)
            return
        topic = self._link.cluster.node_topic(node_id)
        await self._link.call(lambda: self._link.cluster.send(topic, payload), lambda: None)

    def on_node_message(self, handler: NodeHandler) -> None:
        self._node_handler = handler

    # -- used by the listener and the liveness checks ----------------------------------------

    async def run_here(self, app_id: str, message: ControlMessage) -> None:
        if self.control is not None:
            result = self.control(app_id, message)
            if inspect.isawaitable(result):
                await result

    async def publish_remote(self, app_id: str, message: ControlMessage) -> None:
        """``message`` to every other node; raises when Redis fails (callers decide)."""
        await self._link.cluster.control(self._link.node_id, app_id, message)

    async def everywhere(self, app_id: str, message: ControlMessage) -> None:
        """Run ``message`` here and on every other node, degraded or not (used while
        resyncing, when Redis is back but the node is not yet marked healthy)."""
        await self.run_here(app_id, message)
        await self.publish_remote(app_id, message)

    async def received(self, data: bytes) -> None:
        """A control message from the bus (raises ``Dropped`` for one no node writes)."""
        envelope = decode_control(data)
        if envelope.origin != self._link.node_id:
            await self.run_here(envelope.app_id, envelope.message)

    async def node_message(self, payload: bytes) -> None:
        if self._node_handler is not None:
            await self._node_handler(payload)
