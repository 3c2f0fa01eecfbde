"""Signed webhook delivery that never loses an event to a restart or a short outage.

Events from the node are written to a durable queue per app and URL as they happen (all
the events of one event-loop pass in one write, one at a time in flight), and delivered by
one worker per queue: the entries created within ``webhook_batch_delay`` of the oldest go
in one request, removed only after a 2xx, retried with exponential backoff and jitter for
``webhook_retry_for`` seconds. Each worker is its own task, so a slow or dead receiver
never slows fan-out or another app. In Redis mode a lock per queue lets one node at a time
deliver it, and any node picks up the queues of a node that died.

``channel_vacated`` / ``member_removed`` are held for ``webhook_vacated_delay`` in memory
(so that the node's own quick reconnect cancels them without a round trip) and in the
queue: when their node dies, any node (or the restarted one) releases them
``RESCUE_AFTER`` seconds after they fell due, and a transition that undoes one through
another node still cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tidings.brokers.redis.connect import AnyRedis
from tidings.console.tap import Tap
from tidings.core.apps import App, AppRegistry
from tidings.core.webhooks import (
    Delayer,
    Event,
    Hold,
    Occur,
    Push,
    QueueOp,
    Release,
    Unhold,
    backoff,
    body,
    entry,
    hold_id,
    signature,
    window,
)
from tidings.redaction import public_url, scrub
from tidings.server.webhook_queue import WebhookQueue
from tidings.tasks import spawn

log = logging.getLogger("tidings.webhooks")

RESCAN_INTERVAL = 5.0  # seconds between looks for queues another node left behind
LOCK_TTL = 30.0
RESCUE_AFTER = 5.0  # seconds past due before another node releases a held event
MAX_ENTRIES = 1024  # queue entries (events) in one request at most
FIRST_READ = 64  # entries read for a request at first (then 4x more while all fit)
MAX_PENDING_OPS = 100_000  # events waiting for the queue (it is down): more are dropped


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    timeout: float = 5.0
    retry_for: float = 600.0
    batch_delay: float = 0.05
    vacated_delay: float = 3.0


@dataclass(slots=True)
class WebhookStats:
    """Counters per app, kept for the metrics endpoint."""

    sent: int = 0  # batches acknowledged with a 2xx
    retried: int = 0  # failed attempts that will be tried again
    failed: int = 0  # batches dropped after webhook_retry_for
    queued: int = 0  # entries (events, per URL) written to the queue


# KEYS[1] the lock; ARGV[1] this node; ARGV[2] TTL in ms. Take it if free, renew it if ours.
HOLD_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if not owner or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] the lock; ARGV[1] this node. Delete it only if it is ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class QueueLock:
    """One node at a time delivers a queue (Redis mode); always granted otherwise."""

    def __init__(self, client: AnyRedis | None, prefix: str, owner: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._owner = owner
        if client is not None:
            self._hold = client.register_script(HOLD_SCRIPT)
            self._release = client.register_script(RELEASE_SCRIPT)

    async def hold(self, key: str) -> bool:
        """Take or renew the lock of ``key``; False when another node holds it."""
        if self._redis is None:
            return True
        name = f"{self._prefix}:webhooks-lock:{key}"
        held = await self._hold(keys=[name], args=[self._owner, int(LOCK_TTL * 1000)])
        return bool(held)

    async def release(self, key: str) -> None:
        if self._redis is None:
            return
        await self._release(keys=[f"{self._prefix}:webhooks-lock:{key}"], args=[self._owner])


def _queue_key(app_id: str, url: str) -> str:
    return f"{app_id}|{url}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class _Request:
    """The queue entries that go out in one request: ``count`` from ``first`` (its id)."""

    first: int
    count: int
    created: int  # ms, of the first entry: webhook_retry_for counts from it
    events: list[Event]

    @classmethod
    def of(cls, entries: list[tuple[int, bytes]], delay_ms: int) -> _Request:
        """The oldest ``entries`` within the batch window of the first (parsed only up to
        the first one outside it: a backlog is not parsed again for every request)."""
        parsed: list[dict[str, Any]] = []

        def created() -> Iterator[int]:
            for _, raw in entries:
                parsed.append(orjson.loads(raw))
                yield int(parsed[-1]["created"])

        count = window(created(), delay_ms)
        events = [event for p in parsed[:count] for event in p["events"]]
        return cls(entries[0][0], count, int(parsed[0]["created"]), events)


class WebhookSender:
    def __init__(
        self,
        apps: AppRegistry,
        queue: WebhookQueue,
        settings: WebhookSettings,
        lock: QueueLock,
        tap: Callable[[str], Tap | None] = lambda app_id: None,
    ) -> None:
        """``tap(app_id)``: the console's recorder of the app while someone watches it."""
        self.apps = apps
        self.tap = tap
        self.queue = queue
        self.settings = settings
        self.lock = lock
        self.stats: dict[str, WebhookStats] = {app.id: WebhookStats() for app in apps}
        self._pending: list[QueueOp] = []  # to write, in order, at the next flush
        self._dropped = 0  # pending ops dropped while the queue was unreachable
        self._delayer = Delayer()
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._failing: set[str] = set()
        self._kicked: set[str] = set()  # written to while its worker ran: look again
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._closing = False

    # -- the node's side: events in ----------------------------------------------------------

    def active(self, app: App) -> bool:
        return bool(app.webhooks)

    def wants(self, app: App, name: str) -> bool:
        """Whether any webhook of ``app`` takes events called ``name``."""
        return any(not t.event_types or name in t.event_types for t in app.webhooks)

    def _keys(self, app: App, event: Event) -> tuple[str, ...]:
        return tuple(_queue_key(app.id, t.url) for t in app.webhooks if t.wants(event))

    def _add(self, op: QueueOp) -> None:
        if len(self._pending) >= MAX_PENDING_OPS:
            if not self._dropped:  # once per outage of the queue
                log.error("webhook queue unreachable: dropping new events")
            self._dropped += 1
            return
        self._pending.append(op)
        self._wake.set()

    def emit(self, app: App, event: Event) -> None:
        keys = self._keys(app, event)
        if keys:
            self._add(Push(keys, entry([event], _now_ms())))

    def defer(self, app: App, key: Hashable, event: Event) -> None:
        """Hold ``event`` for vacated_delay (channel_vacated, member_removed)."""
        if app.webhooks:
            delay = self.settings.vacated_delay
            self._delayer.defer((app.id, key), (app.id, key, event), time.monotonic() + delay)
            due_ms = _now_ms() + int(delay * 1000)
            self._add(Hold(hold_id(app.id, key), due_ms, app.id, orjson.dumps(event)))

    def cancel(self, app: App, key: Hashable) -> bool:
        """Drop a held event; True when the transition it announced was undone in time."""
        if not self._delayer.cancel((app.id, key)):
            return False
        self._add(Unhold(hold_id(app.id, key)))
        return True

    def occur(self, app: App, undoes: Hashable, event: Event) -> None:
        """Announce ``event`` unless it undoes a held one, here or (in the queue) on a node
        that held it: then neither is sent."""
        if not self.cancel(app, undoes):
            self._add(
                Occur(hold_id(app.id, undoes), self._keys(app, event), entry([event], _now_ms()))
            )

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Entries (events) waiting in the durable queue, by app id and configured URL (0 included).

        In Redis mode the queues are shared, so every node reports the cluster's depth."""
        depths: dict[tuple[str, str], int] = {}
        for app in self.apps:
            for target in app.webhooks:
                depths[(app.id, target.url)] = await self.queue.length(
                    _queue_key(app.id, target.url)
                )
        return depths

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.queue.prepare()
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
        )
        self._tasks = [
            spawn(self._flush_forever(), "webhook batching"),
            spawn(self._rescan_forever(), "webhook queue scan"),
        ]

    async def close(self) -> None:
        """Write every pending event to the durable queue, then stop delivering."""
        self._closing = True
        if self._tasks:
            # Let the write in flight finish rather than cancel it: written twice, an Occur
            # would find its held event gone and send the occupancy it had cancelled.
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tasks[0]), self.settings.timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush(float("inf"))
        for worker in list(self._workers.values()):
            worker.cancel()
        for worker in list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._http is not None:
            await self._http.close()
        await self.queue.close()

    # -- batching into the queue -------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while not self._closing:
            if not self._pending:
                due = self._delayer.next_due()
                timeout = max(0.0, due - time.monotonic()) if due is not None else None
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self._flush(time.monotonic())
            except Exception:  # a broken queue must not stop the loop; retried next time
                log.exception("could not write webhooks to the queue")
                await asyncio.sleep(1.0)

    async def _flush(self, now: float) -> None:
        """Write what happened since the last flush, and the held events now due."""
        for app_id, key, event in self._delayer.due(now):
            app = self.apps.by_id(app_id)
            if app is not None:
                self._add(
                    Release(hold_id(app_id, key), self._keys(app, event), entry([event], _now_ms()))
                )
        if not self._pending:
            return
        ops, self._pending = self._pending, []
        try:
            await self.queue.write(ops)
        except BaseException:
            self._pending[:0] = ops  # written next time, still in order
            raise
        if self._dropped:
            log.warning("webhook queue reachable again; %d event(s) were dropped", self._dropped)
            self._dropped = 0
        touched: set[str] = set()
        for op in ops:
            if isinstance(op, Push | Occur | Release):
                touched.update(op.keys)
                for key in op.keys:
                    self.stats[key.partition("|")[0]].queued += 1
        for key in touched:
            self._ensure_worker(key)

    async def _rescan_forever(self) -> None:
        while True:
            try:
                for key in await self.queue.keys():
                    self._ensure_worker(key)
            except Exception:
                log.exception("could not list webhook queues")
            try:
                await self._rescue()
            except Exception:
                log.exception("could not release held webhook events")
            await asyncio.sleep(RESCAN_INTERVAL)

    async def _rescue(self) -> None:
        """Release held events their node did not release: it died (kill -9) or stopped
        before they fell due. A node still alive but late releases nothing twice: a
        ``Release`` appends only while the event is held."""
        overdue = await self.queue.overdue(_now_ms() - int(RESCUE_AFTER * 1000))
        ops: list[QueueOp] = []
        for held, app_id, raw in overdue:
            app = self.apps.by_id(app_id)
            event: Event = orjson.loads(raw)
            keys = self._keys(app, event) if app is not None else ()
            ops.append(Release(held, keys, entry([event], _now_ms())))
        if ops:
            self._add_all(ops)

    def _add_all(self, ops: list[QueueOp]) -> None:
        for op in ops:
            self._add(op)

    def _ensure_worker(self, key: str) -> None:
        if self._closing:
            return
        if key in self._workers:
            self._kicked.add(key)  # its worker may have just found the queue empty
            return
        task = spawn(self._deliver_queue(key), "webhook delivery")
        self._workers[key] = task
        task.add_done_callback(lambda _: self._worker_done(key))

    def _worker_done(self, key: str) -> None:
        self._workers.pop(key, None)
        if key in self._kicked:
            self._kicked.discard(key)
            self._ensure_worker(key)

    # -- delivery ----------------------------------------------------------------------------

    async def _deliver_queue(self, key: str) -> None:
        app_id, _, url = key.partition("|")
        shown = public_url(url)  # the URL's user info, query and fragment are never logged
        app = self.apps.by_id(app_id)
        target = next((t for t in app.webhooks if t.url == url), None) if app else None
        delay_ms = int(self.settings.batch_delay * 1000)
        attempt = 0
        retry: _Request | None = None  # the request that failed, sent again as it was
        while True:
            self._kicked.discard(key)
            head = await self.queue.peek(key)
            if head is None:
                if await self.lock.hold(key):
                    await self.lock.release(key)
                if key in self._kicked:
                    continue  # written to meanwhile
                return
            # The batch window: wait until the head's window closed (without the lock, so a
            # node that dies now leaves the queue free for the others).
            created = orjson.loads(head[1])["created"]
            wait = (created + delay_ms - _now_ms()) / 1000
            if retry is None and wait > 0:
                await asyncio.sleep(min(wait, self.settings.batch_delay))
            if not await self.lock.hold(key):
                return  # another node delivers this queue
            request: _Request | None = None
            limit = FIRST_READ
            while True:  # read more only while the whole read is inside the window
                entries = await self.queue.peek_many(key, limit)
                if not entries:
                    break
                if retry is not None and retry.first == entries[0][0]:
                    request = retry  # sent again as it was
                    break
                request = _Request.of(entries, delay_ms)
                if request.count < len(entries) or len(entries) < limit or limit >= MAX_ENTRIES:
                    break
                limit = min(4 * limit, MAX_ENTRIES)
            retry = None
            if request is None:
                continue
            if app is None or target is None:
                log.warning(
                    "dropping webhooks for %s (app %s): app or URL no longer configured",
                    public_url(url),
                    app_id,
                )
                await self.queue.ack(key, request.first, request.count)
                continue
            stats = self.stats[app.id]
            events = request.events
            status, problem = await self._post(app, url, dict(target.headers), events)
            tap = self.tap(app.id)
            if tap is not None:
                names = [str(event.get("name")) for event in events]
                outcome = "sent" if problem is None else "failed"
                tap.webhook(outcome, shown, names, status, problem)
            if problem is None:
                await self.queue.ack(key, request.first, request.count)
                stats.sent += 1
                attempt = 0
                if key in self._failing:
                    self._failing.discard(key)
                    log.info("webhook %s (app %s) delivers again", shown, app.id)
                continue
            attempt += 1
            if key not in self._failing:  # once per outage, not per attempt
                self._failing.add(key)
                log.warning("webhook %s (app %s) failed: %s; retrying", shown, app.id, problem)
            age = time.time() - request.created / 1000
            if age > self.settings.retry_for:
                await self.queue.ack(key, request.first, request.count)
                stats.failed += 1
                log.error(
                    "webhook %s (app %s): dropped a batch of %d event(s) after %.0f s",
                    shown,
                    app.id,
                    len(events),
                    age,
                )
                continue
            stats.retried += 1
            retry = request
            await asyncio.sleep(backoff(attempt, random.random()))

    async def _post(
        self, app: App, url: str, headers: dict[str, str], events: list[Event]
    ) -> tuple[int | None, str | None]:
        """Send one batch: the HTTP status (None: no answer) and, unless it was a 2xx, why
        it failed (safe to log)."""
        assert self._http is not None
        # time_ms is set at each attempt: receivers refuse bodies older than 5 minutes.
        raw = body(events, int(time.time() * 1000))
        request_headers = {
            **headers,
            "Content-Type": "application/json",
            "X-Pusher-Key": app.key,
            "X-Pusher-Signature": signature(app.secret, raw),
        }
        try:
            # No redirects: aiohttp would follow a 301/302 with a bodiless GET, and its 2xx
            # would acknowledge a batch nobody received.
            async with self._http.post(
                url, data=raw, headers=request_headers, allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: aiohttp refuses some URL and header combinations before sending.
            # It quotes the URL in some errors (InvalidURL, connection timeouts).
            message = scrub(str(exc), url, headers.values())
            return None, f"{type(exc).__name__}: {message}" if message else type(exc).__name__
