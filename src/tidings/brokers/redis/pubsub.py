"""Publications over Redis pub/sub.

A publication is written to local subscribers at once and PUBLISHed (or SPUBLISHed, with
``sharded``) on ``{prefix}#{app}#{channel}``. A node SUBSCRIBEs only to channels it has
local subscribers for (``listener.py``), and skips its own publications when they come
back. Order per channel is publish order per publishing node (one connection per node
publishes); delivery is at most once.
"""

from __future__ import annotations

from tidings.brokers.base import Deliver
from tidings.brokers.bus import decode_publication
from tidings.brokers.redis.link import RedisLink


class RedisPubSub:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._own_origin = link.node_id.encode() + b"\x00"
        self.deliver: Deliver | None = None  # set while the broker runs

    async def publish(self, app_id: str, channel: str, message: bytes, exclude: str | None) -> bool:
        if self.deliver is not None:
            self.deliver(app_id, channel, message, exclude, None)
        origin = self._link.node_id

        async def to_other_nodes() -> bool:
            await self._link.cluster.publish(origin, app_id, channel, message, exclude)
            return True

        # At most once: other nodes miss what is published during an outage.
        return await self._link.call(to_other_nodes, lambda: False)

    def received(self, topic: bytes, data: bytes) -> None:
        """A publication from the bus (raises ``Dropped`` for one no node writes).

        A positioned one (``history.py``) is delivered here even when this node published
        it: it was not delivered locally then, so that every node sees one order."""
        if data.startswith(self._own_origin) or self.deliver is None:
            return  # delivered locally when it was published
        publication = decode_publication(data)
        app_id, channel = self._link.cluster.topic_channel(topic)
        self.deliver(
            app_id, channel, publication.message, publication.exclude, publication.position
        )
