"""Publications over Redis pub/sub.

A publication is PUBLISHed (or SPUBLISHed, with ``sharded``) on ``{prefix}#{app}#{channel}``
and written to local subscribers once Redis has answered (or failed to). A node SUBSCRIBEs
only to channels it has local subscribers for (``listener.py``), and skips its own
publications when they come back. Order per channel is publish order per publishing node;
delivery is at most once.

The PUBLISHes of one node go out through one sender, one pipeline at a time: what is
published while a pipeline is on its way waits for the next one, in the order of the
calls. Concurrent REST requests thus share a round trip instead of paying one each, and
no two pipelines (on two pooled connections) can overtake each other.

Why local subscribers wait for Redis's answer (issue 17): a REST publish is answered only
once Redis took it. Had the node written to its own sockets first, in the tick of the
request, the answer would wait for that whole fan-out (tens of ms for thousands of
sockets) and then for the round trip: a publisher with a few connections then sends a
few publications per fan-out, and each is written to every socket alone. Settled in the
tick of Redis's answer, the callers are woken before the fan-out that tick ends with, so
their answers leave first, the next publications arrive while the sockets are written,
and they are written together; the other nodes write at about the same time as this one.
The cost: local subscribers get a publication one Redis round trip later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from tidings.brokers.base import Deliver
from tidings.brokers.bus import decode_publication
from tidings.brokers.redis.link import RedisLink

log = logging.getLogger("tidings.redis")

MAX_PIPELINE = 1024  # publications per pipeline; more wait for the next one

_Pending = tuple[str, str, bytes, str | None, "asyncio.Future[bool]"]


class RedisPubSub:
    local_only = False  # every node subscribed to the channel hears it

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._own_origin = link.node_id.encode() + b"\x00"
        self.deliver: Deliver | None = None  # set while the broker runs
        self._pending: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None

    def publish(
        self, app_id: str, channel: str, message: bytes, exclude: str | None
    ) -> asyncio.Future[bool]:
        """Queued for the sender before this returns (so the order of the calls is the
        order on the bus); delivered locally when Redis has answered, or at once while
        degraded. The future says whether it went out, and is done only once this node's
        subscribers have it."""
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._link.degraded and self._sender is None:
            # At most once: other nodes miss what is published now. (With a pipeline still
            # on its way, it waits behind it: local order is the order of the calls.)
            sent.set_result(False)
            self._deliver_locally(app_id, channel, message, exclude)
            return sent
        self._pending.append((app_id, channel, message, exclude, sent))
        if self._sender is None:
            # A task, not a call now: what else this loop tick publishes joins the pipeline.
            self._sender = asyncio.create_task(self._send())
        return sent

    async def close(self) -> None:
        """Let the publications already accepted go out (or fail) before the link closes."""
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def _send(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_PIPELINE], self._pending[MAX_PIPELINE:]
                ok = await self._link.call(
                    partial(self._to_other_nodes, [(a, c, m, x) for a, c, m, x, _ in batch]),
                    lambda: False,
                )
                settled, batch = batch, []
                self._settle(settled, ok)
        finally:
            self._sender = None
            rest, self._pending = batch + self._pending, []
            self._settle(rest, False)

    def _settle(self, batch: list[_Pending], ok: bool) -> None:
        """Wake the callers, then queue the local deliveries (the Coalescer writes them at
        the end of this tick, after the woken callers have answered their requests)."""
        for *_, sent in batch:
            if not sent.done():  # its caller may have been cancelled
                sent.set_result(ok)
        for app_id, channel, message, exclude, _ in batch:
            self._deliver_locally(app_id, channel, message, exclude)

    def _deliver_locally(
        self, app_id: str, channel: str, message: bytes, exclude: str | None
    ) -> None:
        """One publication to this node's subscribers; a failure is logged, never raised
        (the publications settled with it still go out)."""
        if self.deliver is None:
            return
        try:
            self.deliver(app_id, channel, message, exclude, None)
        except Exception:
            log.exception("delivering a publication to %s locally failed", channel)

    async def _to_other_nodes(self, publications: list[tuple[str, str, bytes, str | None]]) -> bool:
        await self._link.cluster.publish_many(self._link.node_id, publications)
        return True

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
