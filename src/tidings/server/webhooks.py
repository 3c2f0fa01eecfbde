"""Signed webhook delivery that never loses an event to a restart or a short outage.

Events from the node are batched (``webhook_batch_delay``), written to a durable queue per
app and URL, and delivered by one worker per queue: oldest batch first, removed only after a
2xx, retried with exponential backoff and jitter for ``webhook_retry_for`` seconds. Each
worker is its own task, so a slow or dead receiver never slows fan-out or another app. In
Redis mode a lock per queue lets one node at a time deliver it, and any node picks up the
queues of a node that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import aiohttp
import orjson

from tidings.brokers.redis.connect import AnyRedis
from tidings.console.tap import Tap
from tidings.core.apps import App, AppRegistry
from tidings.core.webhooks import Batcher, Delayer, Event, backoff, body, signature
from tidings.redaction import public_url, scrub
from tidings.server.webhook_queue import WebhookQueue
from tidings.tasks import spawn

log = logging.getLogger("tidings.webhooks")

RESCAN_INTERVAL = 5.0  # seconds between looks for queues another node left behind
LOCK_TTL = 30.0


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
    queued: int = 0  # batches written to the queue


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
        self._batcher = Batcher(settings.batch_delay)
        self._delayer = Delayer()
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._failing: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._closing = False

    # -- the node's side: events in ----------------------------------------------------------

    def active(self, app: App) -> bool:
        return bool(app.webhooks)

    def wants(self, app: App, name: str) -> bool:
        """Whether any webhook of ``app`` takes events called ``name``."""
        return any(not t.event_types or name in t.event_types for t in app.webhooks)

    def emit(self, app: App, event: Event) -> None:
        now = time.monotonic()
        for target in app.webhooks:
            if target.wants(event):
                self._batcher.add((app.id, target.url), event, now)
                self._wake.set()

    def defer(self, app: App, key: Hashable, event: Event) -> None:
        """Hold ``event`` for vacated_delay (channel_vacated, member_removed)."""
        if app.webhooks:
            at = time.monotonic() + self.settings.vacated_delay
            self._delayer.defer((app.id, key), (app.id, event), at)
            self._wake.set()

    def cancel(self, app: App, key: Hashable) -> bool:
        """Drop a held event; True when the transition it announced was undone in time."""
        return self._delayer.cancel((app.id, key))

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Batches waiting in the durable queue, by app id and configured URL (0 included).

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
        while True:
            deadlines = [d for d in (self._batcher.next_due(), self._delayer.next_due()) if d]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self._flush(time.monotonic())
            except Exception:  # a broken queue must not stop the loop; retried next time
                log.exception("could not write webhooks to the queue")
                await asyncio.sleep(1.0)

    async def _flush(self, now: float) -> None:
        for held in self._delayer.due(now):
            app_id, event = held
            app = self.apps.by_id(app_id)
            if app is not None:
                self.emit(app, event)
        for key, events in self._batcher.due(now):
            app_id, url = key
            batch = orjson.dumps({"created": int(time.time() * 1000), "events": events})
            queue_key = _queue_key(app_id, url)
            await self.queue.push(queue_key, batch)
            self.stats[app_id].queued += 1
            self._ensure_worker(queue_key)

    async def _rescan_forever(self) -> None:
        while True:
            try:
                for key in await self.queue.keys():
                    self._ensure_worker(key)
            except Exception:
                log.exception("could not list webhook queues")
            await asyncio.sleep(RESCAN_INTERVAL)

    def _ensure_worker(self, key: str) -> None:
        if self._closing or key in self._workers:
            return
        task = spawn(self._deliver_queue(key), "webhook delivery")
        self._workers[key] = task
        task.add_done_callback(lambda _: self._workers.pop(key, None))

    # -- delivery ----------------------------------------------------------------------------

    async def _deliver_queue(self, key: str) -> None:
        app_id, _, url = key.partition("|")
        shown = public_url(url)  # the URL's user info, query and fragment are never logged
        app = self.apps.by_id(app_id)
        target = next((t for t in app.webhooks if t.url == url), None) if app else None
        attempt = 0
        while True:
            if not await self.lock.hold(key):
                return  # another node delivers this queue
            head = await self.queue.peek(key)
            if head is None:
                await self.lock.release(key)
                return
            batch_id, raw = head
            batch = orjson.loads(raw)
            if app is None or target is None:
                log.warning(
                    "dropping webhooks for %s (app %s): app or URL no longer configured",
                    public_url(url),
                    app_id,
                )
                await self.queue.ack(key, batch_id)
                continue
            stats = self.stats[app.id]
            events = batch["events"]
            status, problem = await self._post(app, url, dict(target.headers), events)
            tap = self.tap(app.id)
            if tap is not None:
                names = [str(event.get("name")) for event in events]
                outcome = "sent" if problem is None else "failed"
                tap.webhook(outcome, shown, names, status, problem)
            if problem is None:
                await self.queue.ack(key, batch_id)
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
            age = time.time() - batch["created"] / 1000
            if age > self.settings.retry_for:
                await self.queue.ack(key, batch_id)
                stats.failed += 1
                log.error(
                    "webhook %s (app %s): dropped a batch of %d event(s) after %.0f s",
                    shown,
                    app.id,
                    len(batch["events"]),
                    age,
                )
                continue
            stats.retried += 1
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
