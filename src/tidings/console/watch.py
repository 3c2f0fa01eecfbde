"""Who watches which app, cluster-wide, and what is sent to them.

A node serving console streams (or overview polls) of an app announces it to every node
with a ``console`` control message through the broker, renewed every ``WATCH_RENEW``
seconds; a node that heard it keeps a :class:`~tidings.console.tap.Tap` for that app until
the announcement lapses (``WATCH_TTL``) or the watcher says it stopped. Watched nodes send
their records and their stats to each watcher with the broker's node-to-node messages, in
batches (at most ``1 / FLUSH_INTERVAL`` per second). The node serving a stream sums the
stats of every node that reported in the last ``REPORT_TTL`` seconds.

Control data (JSON in ``Console.data``): ``{"w": node}`` watches the message's app,
``{"u": node}`` stops watching it, ``{"r": session, "x": expiry}`` revokes a console
session (a logout) on every node. Batches (node messages tagged :data:`TAG`):
``{"a": app, "n": node, "r": [records], "s": [deliveries_per_second, connections]}``.
Anything else on either path is logged (by the broker's drop counter) and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from tidings.brokers.control import Console
from tidings.console.streams import Stream, frame
from tidings.console.tap import DEFAULT_RATE, Record, Tap
from tidings.node import Node
from tidings.tasks import spawn

log = logging.getLogger("tidings.console")

TAG = b"C"  # the first byte of the console's node messages (brokers/node_messages.py)
WATCH_RENEW = 5.0
WATCH_TTL = 15.0
FLUSH_INTERVAL = 0.25
STATS_INTERVAL = 1.0
REPORT_TTL = 3.0
MAX_STREAMS = 20  # per node
MAX_PENDING = 1000  # records waiting for the next batch to one app's watchers


class BadConsoleMessage(ValueError):
    """A console control message or batch that no Tidings node writes."""


class Watch:
    """This node's side of the console, for every app: taps, streams, watchers, stats."""

    def __init__(
        self,
        node: Node,
        rate: int = DEFAULT_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.node_id = node.broker.node_id
        self.rate = rate
        self.clock = clock
        self.streams: dict[str, set[Stream]] = {}
        self.interest: dict[str, float] = {}  # app -> until when overview polls keep it watched
        self.watchers: dict[str, dict[str, float]] = {}  # app -> other node -> until
        self.pending: dict[str, list[Record]] = {}
        # app -> node -> (when, deliveries_per_second, connections)
        self.reports: dict[str, dict[str, tuple[float, int, int]]] = {}
        self._deliveries: dict[str, int] = {}  # the app's delivery counter at the last tick
        self._announced: dict[str, float] = {}  # app -> when this node last announced it
        self.on_revoke: Callable[[str, float], None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        node.node_messages.handle(TAG, self.on_node_message)
        node.console_control = self.on_control

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = spawn(self._tick_forever(), "console")

    async def close(self) -> None:
        for streams in self.streams.values():
            for stream in streams:
                stream.close()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = spawn(coroutine, name)
        self._tasks.add(task)  # asyncio keeps only a weak reference to running tasks
        task.add_done_callback(self._tasks.discard)

    # -- local listeners ---------------------------------------------------------------------

    def open_stream(self, stream: Stream) -> bool:
        """Register a listener; False when this node already serves MAX_STREAMS."""
        if sum(len(s) for s in self.streams.values()) >= MAX_STREAMS:
            return False
        first = not self.streams.get(stream.app_id)
        self.streams.setdefault(stream.app_id, set()).add(stream)
        self._retap(stream.app_id)
        if first:
            self._spawn(self._announce(stream.app_id, True), "console watch")
        return True

    def close_stream(self, stream: Stream) -> None:
        stream.close()
        streams = self.streams.get(stream.app_id)
        if streams is None:
            return
        streams.discard(stream)
        if not streams:
            del self.streams[stream.app_id]
            self._retap(stream.app_id)
            if not self._interested(stream.app_id):
                self._spawn(self._announce(stream.app_id, False), "console unwatch")

    def close_session(self, session_id: str) -> None:
        """A logout: end that session's streams."""
        for streams in list(self.streams.values()):
            for stream in list(streams):
                if stream.session_id == session_id:
                    stream.close()

    async def poll(self, app_id: str) -> None:
        """An overview poll: keep the app watched cluster-wide for a while (stats)."""
        self.interest[app_id] = self.clock() + WATCH_TTL
        if self.clock() - self._announced.get(app_id, -WATCH_TTL) >= WATCH_RENEW:
            await self._announce(app_id, True)

    def cluster_counts(self, app_id: str) -> tuple[int, int]:
        """(connections, nodes): this node's, plus what the others last reported."""
        app = self.node.apps.by_id(app_id)
        connections = self.node.app_gauges(app)[0] if app is not None else 0
        nodes = 1
        now = self.clock()
        for node_id, (when, _, count) in self.reports.get(app_id, {}).items():
            if node_id != self.node_id and now - when < REPORT_TTL:
                connections += count
                nodes += 1
        return connections, nodes

    def _interested(self, app_id: str) -> bool:
        return bool(self.streams.get(app_id)) or self.interest.get(app_id, 0.0) > self.clock()

    # -- taps --------------------------------------------------------------------------------

    def _retap(self, app_id: str) -> None:
        """Give the app a tap while someone anywhere watches it, and none otherwise."""
        wanted = bool(self.streams.get(app_id)) or bool(self.watchers.get(app_id))
        current = self.node.tap(app_id)
        if wanted and current is None:
            sink = functools.partial(self._record, app_id)
            self.node.set_tap(app_id, Tap(app_id, self.node_id, sink, self.rate))
            app = self.node.apps.by_id(app_id)
            if app is not None:
                self._deliveries[app_id] = self.node.counters(app).deliveries
        elif not wanted and current is not None:
            self.node.set_tap(app_id, None)
            self.pending.pop(app_id, None)

    def _record(self, app_id: str, record: Record) -> None:
        """A record made on this node: to this node's listeners and to the watchers."""
        self._show(app_id, record)
        if self.watchers.get(app_id):
            pending = self.pending.setdefault(app_id, [])
            if len(pending) < MAX_PENDING:
                pending.append(record)
            else:
                tap = self.node.tap(app_id)
                if tap is not None:
                    tap.dropped += 1

    def _show(self, app_id: str, record: Record) -> None:
        streams = self.streams.get(app_id)
        if streams:
            encoded = frame(record)
            for stream in streams:
                stream.offer(record, encoded)

    # -- the cluster -------------------------------------------------------------------------

    async def _announce(self, app_id: str, watching: bool) -> None:
        if watching:
            self._announced[app_id] = self.clock()
        else:
            self._announced.pop(app_id, None)
        data = orjson.dumps({"w" if watching else "u": self.node_id}).decode()
        try:
            await self.node.broker.control.send(app_id, Console(data))
        except Exception:
            log.exception("console: announcing a watch of app %s failed", app_id)

    async def revoke(self, app_id: str, session_id: str, expires: float) -> None:
        """Tell every node (this one included) that a session has logged out."""
        data = orjson.dumps({"r": session_id, "x": expires}).decode()
        await self.node.broker.control.send(app_id, Console(data))

    def on_control(self, app_id: str, message: Console) -> None:
        try:
            body = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            raise BadConsoleMessage("console control data is not JSON") from None
        if not isinstance(body, dict):
            raise BadConsoleMessage("console control data is not an object")
        if isinstance(body.get("r"), str) and isinstance(body.get("x"), int | float):
            if self.on_revoke is not None:
                self.on_revoke(body["r"], float(body["x"]))
            return
        watcher = body.get("w", body.get("u"))
        if not isinstance(watcher, str) or not watcher:
            raise BadConsoleMessage("console control message of no known kind")
        if watcher == self.node_id or self.node.apps.by_id(app_id) is None:
            return
        watchers = self.watchers.setdefault(app_id, {})
        if "w" in body:
            new = watcher not in watchers
            watchers[watcher] = self.clock() + WATCH_TTL
            self._retap(app_id)
            if new:  # a first report now, so the watcher's overview counts this node at once
                self._spawn(self._send(app_id, watcher, [], self._stats(app_id)), "console report")
        else:
            watchers.pop(watcher, None)
            if not watchers:
                del self.watchers[app_id]
            self._retap(app_id)

    async def on_node_message(self, payload: bytes) -> None:
        """A batch from a watched node."""
        try:
            body = orjson.loads(payload[len(TAG) :])
        except orjson.JSONDecodeError:
            raise BadConsoleMessage("console batch is not JSON") from None
        if not isinstance(body, dict):
            raise BadConsoleMessage("console batch is not an object")
        app_id, node_id, records = body.get("a"), body.get("n"), body.get("r", [])
        stats = body.get("s")
        if not isinstance(app_id, str) or not isinstance(node_id, str) or not node_id:
            raise BadConsoleMessage("console batch without app or node")
        if not isinstance(records, list):
            raise BadConsoleMessage("console batch records are not a list")
        if stats is not None:
            if (
                not isinstance(stats, list)
                or len(stats) != 2
                or not all(type(n) is int for n in stats)
            ):
                raise BadConsoleMessage("console batch stats are not two integers")
            self.reports.setdefault(app_id, {})[node_id] = (self.clock(), stats[0], stats[1])
        if not self.streams.get(app_id):
            return
        for record in records:
            if isinstance(record, dict) and isinstance(record.get("type"), str):
                self._show(app_id, record)

    async def _send(
        self, app_id: str, node_id: str, records: list[Record], stats: list[int] | None
    ) -> None:
        batch: dict[str, Any] = {"a": app_id, "n": self.node_id, "r": records}
        if stats is not None:
            batch["s"] = stats
        try:
            await self.node.broker.control.to_node(node_id, TAG + orjson.dumps(batch))
        except Exception:
            log.exception("console: sending records to node %s failed", node_id)

    def _stats(self, app_id: str) -> list[int]:
        """This node's deliveries in the last second and connections of the app."""
        app = self.node.apps.by_id(app_id)
        if app is None:
            return [0, 0]
        deliveries = self.node.counters(app).deliveries
        per_second = max(0, deliveries - self._deliveries.get(app_id, deliveries))
        self._deliveries[app_id] = deliveries
        return [per_second, self.node.app_gauges(app)[0]]

    # -- the clock ---------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        next_second = self.clock() + STATS_INTERVAL
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                now = self.clock()
                second = now >= next_second
                if second:
                    next_second = now + STATS_INTERVAL
                await self._tick(now, second)
            except Exception:
                log.exception("console tick failed")

    async def _tick(self, now: float, second: bool) -> None:
        stats: dict[str, list[int]] = {}
        if second:
            self._expire(now)
            for app_id in list(self.streams) + list(self.watchers):
                if app_id in stats:
                    continue
                tap = self.node.tap(app_id)
                if tap is None:
                    continue
                stats[app_id] = own = self._stats(app_id)
                self.reports.setdefault(app_id, {})[self.node_id] = (now, own[0], own[1])
                dropped = tap.take_dropped()
                if dropped:
                    at = int(time.time() * 1000)
                    notice = {"type": "dropped", "time": at, "node": self.node_id}
                    self._record(app_id, {**notice, "count": dropped})
            for app_id in list(self.streams):
                self._show(app_id, self._summed(app_id, now))
            for app_id in {*self.streams, *self.interest}:
                due = now - self._announced.get(app_id, 0.0) >= WATCH_RENEW
                if due and self._interested(app_id):
                    await self._announce(app_id, True)
        for app_id, watchers in list(self.watchers.items()):
            records = self.pending.pop(app_id, [])
            app_stats = stats.get(app_id)
            if not records and app_stats is None:
                continue
            for node_id in list(watchers):
                await self._send(app_id, node_id, records, app_stats)

    def _summed(self, app_id: str, now: float) -> Record:
        deliveries = connections = nodes = 0
        for when, per_second, count in self.reports.get(app_id, {}).values():
            if now - when < REPORT_TTL:
                deliveries += per_second
                connections += count
                nodes += 1
        return {
            "type": "stats",
            "time": int(time.time() * 1000),
            "node": self.node_id,
            "deliveries_per_second": deliveries,
            "connections": connections,
            "nodes": max(nodes, 1),
        }

    def _expire(self, now: float) -> None:
        for app_id, until in list(self.interest.items()):
            if until <= now:
                del self.interest[app_id]
        for app_id, watchers in list(self.watchers.items()):
            for node_id, until in list(watchers.items()):
                if until <= now:
                    del watchers[node_id]
            if not watchers:
                del self.watchers[app_id]
                self._retap(app_id)
        for app_id, reports in list(self.reports.items()):
            for node_id, (when, _, _) in list(reports.items()):
                if now - when >= WATCH_TTL:
                    del reports[node_id]
            if not reports:
                del self.reports[app_id]
