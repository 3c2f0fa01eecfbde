"""The live models of one :class:`tidings.Realtime`: their declarations, how their commits are
published through it, and the snapshots their channels start with.

``rt.live_models`` is the :class:`LiveModels` of a Realtime. The ORM shells publish through
:meth:`LiveModels.publish`; an embedded node awaits :meth:`LiveModels.snapshot` (its
``node.live_snapshots``); the framework integrations answer ``POST /pusher/live-snapshot``
with :meth:`LiveModels.snapshot_sync` / :meth:`LiveModels.asnapshot` after
:func:`verify_snapshot_request`.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.live_hold import SnapshotFailed
from tidings.core.webhooks import signature
from tidings.live.model import PREFIX, LiveSpec, Publication, events, serialize, targets

if TYPE_CHECKING:
    from tidings.core.apps import App
    from tidings.realtime import Realtime

log = logging.getLogger("tidings.live")

Reader = Callable[[Any], dict[str, Any]]
"""The declared fields of one row object (ORM instance), by declared name, with no query."""


class SnapshotRefused(Exception):
    """A snapshot request the app cannot answer: ``status`` 401 (bad signature), 400 (not a
    snapshot request), 404 (no live model has that channel)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class LiveModels:
    """The ``@rt.live`` declarations of one Realtime."""

    def __init__(self, rt: Realtime) -> None:
        self._rt = rt
        self.specs: dict[str, LiveSpec] = {}
        self._readers: dict[str, Reader] = {}
        # Commits queued for the Realtime's loop, the task publishing them (while it runs),
        # whether a wake-up is on its way to the loop, and how many changes are queued.
        self._queue: deque[Sequence[Publication]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._waking = False
        self._queued = 0
        self._lock = threading.Lock()

    def add(self, spec: LiveSpec, reader: Reader | None = None) -> None:
        if spec.name in self.specs:
            raise ValueError(f"a live model named {spec.name!r} is already declared")
        self.specs[spec.name] = spec
        self._readers[spec.name] = reader or _attributes(spec)

    def specs_for(self, model: type) -> list[LiveSpec]:
        """The declarations of ``model`` (or of a class it inherits from)."""
        return [spec for spec in self.specs.values() if issubclass(model, spec.model)]

    def find(self, channel: str) -> tuple[LiveSpec, dict[str, str]] | None:
        """The declaration a ``private-live.`` channel belongs to, and its filter values."""
        if not channel.startswith(PREFIX):
            return None
        name = channel[len(PREFIX) :].partition(".")[0]
        spec = self.specs.get(name)
        if spec is None:
            return None
        filters = spec.parse(channel)
        return None if filters is None else (spec, filters)

    def values(self, spec: LiveSpec, row: Any) -> dict[str, Any]:
        """A row (an ORM instance or a mapping) as its declared fields."""
        if isinstance(row, Mapping):
            return spec.row(row)
        return self._readers[spec.name](row)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, publications: Sequence[Publication]) -> None:
        """Publish a commit's events, after those of every earlier commit, without waiting
        for them: they are queued for the Realtime's loop, which publishes whatever has
        queued up in one go (:meth:`_drain`). The saving thread waits only when more than
        ``MAX_QUEUED`` changes are queued. Never raises."""
        if not publications:
            return
        rt = self._rt
        if rt.embedded and not rt.running:
            log.warning(
                "live: %d change(s) not published: this process's Realtime is not running",
                len(publications),
            )
            return
        try:
            loop = rt._home.loop()
        except Exception:
            log.exception("live: %d change(s) not published", len(publications))
            return
        with self._lock:
            self._queue.append(publications)
            self._queued += len(publications)
            full = self._queued > MAX_QUEUED
            # One wake-up on its way is enough: it drains whatever is queued when it runs.
            wake, self._waking = not self._waking, True
        if _running_loop() is loop:
            if wake:
                self._wake()
            return
        if wake:
            loop.call_soon_threadsafe(self._wake)
        if full:
            try:
                asyncio.run_coroutine_threadsafe(self.flush(), loop).result(rt.timeout)
            except Exception:
                log.exception("live: waiting for queued changes to be published failed")

    def _wake(self) -> None:
        """On the loop: start draining the queue, unless a drain is under way (it goes on
        until the queue is empty, so it will publish what was just queued)."""
        with self._lock:
            self._waking = False
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Publish the queued commits in commit order: all those queued by now together
        (one ``occupied`` question, one call to the backend), then the next ones."""
        while True:
            with self._lock:
                if not self._queue:
                    return
                commits = list(self._queue)
                self._queue.clear()
            publications = [publication for commit in commits for publication in commit]
            try:
                await self.apublish(publications)
            finally:
                with self._lock:
                    self._queued -= len(publications)

    def wait(self) -> None:
        """:meth:`flush` from a thread that is not the Realtime's loop (a sync view, a test,
        a management command that must know its changes went out before it exits)."""
        if not self._rt.running:
            return
        # Scheduled after every _wake already asked of the loop (its calls keep their order).
        loop = self._rt._home.loop()
        asyncio.run_coroutine_threadsafe(self.flush(), loop).result(self._rt.timeout)

    async def flush(self) -> None:
        """Wait until every commit queued so far is published (from the Realtime's loop)."""
        while True:
            if self._drainer is not None and not self._drainer.done():
                await asyncio.wait([self._drainer])
            elif self._queue:
                self._wake()  # its wake-up has not run yet
            else:
                return

    async def apublish(self, publications: Sequence[Publication]) -> None:
        """Publish now, from the Realtime's loop or another: one ``occupied`` question for
        every channel of ``publications``, serialization only for the occupied ones, one
        call to the backend. Never raises: the commits are done, a failure is logged (the
        clients heal on their next snapshot)."""
        try:
            occupied = await self._rt.aoccupied(targets(publications))
            found = events(publications, occupied)
            if found:
                await self._rt._atrigger_many(found)
        except Exception:
            log.exception("live: publishing %d change(s) failed", len(publications))

    # -- snapshots -----------------------------------------------------------------------

    async def snapshot(self, app: App, channel: str, socket_id: str) -> bytes:
        """``node.live_snapshots``: the JSON ``{"rows": [...], "version": V}`` of a channel;
        a sync ``snapshot()`` (and the rows it returns, a lazy query) runs in a thread."""
        try:
            return await self.asnapshot(channel)
        except SnapshotRefused as refused:
            raise SnapshotFailed(refused.message) from None

    async def asnapshot(self, channel: str) -> bytes:
        spec, filters = self._declared(channel)
        handler = spec.handler
        if inspect.iscoroutinefunction(handler.snapshot):
            rows = await handler.snapshot(**filters)
            if hasattr(rows, "__aiter__"):
                rows = [row async for row in rows]
            return await asyncio.to_thread(self._encode, spec, rows)
        return await asyncio.to_thread(self._snapshot_sync, spec, filters)

    def snapshot_sync(self, channel: str) -> bytes:
        """The snapshot, from a sync view (Django, Flask)."""
        spec, filters = self._declared(channel)
        if inspect.iscoroutinefunction(spec.handler.snapshot):
            return asyncio.run(self.asnapshot(channel))
        return self._snapshot_sync(spec, filters)

    def _declared(self, channel: str) -> tuple[LiveSpec, dict[str, str]]:
        found = self.find(channel)
        if found is None:
            raise SnapshotRefused(f"no live model publishes to {channel}", 404)
        return found

    def _snapshot_sync(self, spec: LiveSpec, filters: dict[str, str]) -> bytes:
        return self._encode(spec, spec.handler.snapshot(**filters))

    def _encode(self, spec: LiveSpec, rows: Iterable[Any]) -> bytes:
        values = [self.values(spec, row) for row in rows]
        versions = [v[spec.version] for v in values if isinstance(v.get(spec.version), int)]
        return serialize({"rows": values, "version": max(versions, default=0)})


def verify_snapshot_request(
    app: App, key: str | None, signed: str | None, body: bytes
) -> tuple[str, str | None]:
    """The channel and socket id of a ``POST /pusher/live-snapshot`` signed like a webhook
    (``X-Pusher-Key`` and the hex HMAC-SHA256 of the body in ``X-Pusher-Signature``, both
    compared in constant time)."""
    key_ok = hmac.compare_digest((key or "").encode(), app.key.encode())
    expected = signature(app.secret, body)
    if not (key_ok and hmac.compare_digest((signed or "").encode(), expected.encode())):
        raise SnapshotRefused("invalid snapshot request signature", 401)
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SnapshotRefused("a snapshot request is a JSON object", 400) from None
    if not isinstance(request, dict) or not isinstance(request.get("channel"), str):
        raise SnapshotRefused("a snapshot request names its channel", 400)
    socket_id = request.get("socket_id")
    return request["channel"], socket_id if isinstance(socket_id, str) else None


def _attributes(spec: LiveSpec) -> Reader:
    def read(row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in spec.fields}

    return read


# Changes queued by saving threads before they wait for the loop to catch up.
MAX_QUEUED = 10_000


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def answer_snapshot(
    models: LiveModels, app: App, key: str | None, signed: str | None, body: bytes
) -> tuple[int, bytes]:
    """``POST /pusher/live-snapshot`` from a sync view: the status and JSON body to answer
    (200 with the snapshot; 401, 400, 404 or 500 with ``{"error": ...}``)."""
    try:
        channel, _ = verify_snapshot_request(app, key, signed, body)
        return 200, models.snapshot_sync(channel)
    except SnapshotRefused as refused:
        return refused.status, serialize({"error": refused.message})
    except Exception as exc:
        log.exception("live: the snapshot failed")
        return 500, serialize({"error": f"the snapshot failed: {type(exc).__name__}"})


async def aanswer_snapshot(
    models: LiveModels, app: App, key: str | None, signed: str | None, body: bytes
) -> tuple[int, bytes]:
    """:func:`answer_snapshot` from an async view (the sync parts in a thread)."""
    try:
        channel, _ = verify_snapshot_request(app, key, signed, body)
        return 200, await models.asnapshot(channel)
    except SnapshotRefused as refused:
        return refused.status, serialize({"error": refused.message})
    except Exception as exc:
        log.exception("live: the snapshot failed")
        return 500, serialize({"error": f"the snapshot failed: {type(exc).__name__}"})


def socket_id_header(value: str | None) -> str | None:
    """An ``X-Socket-ID`` header as the socket id to exclude; None when absent or not a
    socket id (a malformed one would get the whole commit's batch refused)."""
    from tidings.authorization import SOCKET_ID

    if value is None or not SOCKET_ID.match(value):
        return None
    return value
