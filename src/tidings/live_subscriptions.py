"""Live subscriptions on their way in: held while their snapshot is fetched, then released.

When a socket subscribes to a ``private-live.`` channel that has a snapshot provider, the
node hands the subscription to :class:`LiveSubscriptions` (docs/live-snapshot.md tells the
whole story; :mod:`tidings.core.live_hold` is its pure half):

1. :meth:`~LiveSubscriptions.hold` puts a :class:`~tidings.core.live_hold.LiveHold` in the
   hub in the socket's place, before ``subscription_succeeded`` is sent: from then on every
   publication for that socket and channel is kept;
2. :meth:`~LiveSubscriptions.fetch` asks the provider in a task of its own, within the app's
   ``live_snapshot_timeout`` and ``live_snapshot_concurrency``;
3. the snapshot and the held events are then sent and the connection takes the hold's place
   in the hub, all in one loop tick; or, if the snapshot failed, the node is asked to end
   the subscription with the ``pusher:subscription_error`` built here.

An unsubscribe or a close meanwhile calls :meth:`~LiveSubscriptions.drop`, which cancels the
fetch: its result is for nobody.

How each snapshot ended, the holds that overflowed and the held events released are counted
per app (:class:`LiveStats`) for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from tidings.core.apps import App
from tidings.core.hub import Hub
from tidings.core.live_hold import (
    HOLD_BOUNDS,
    LiveHold,
    SnapshotFailed,
    snapshot_failure,
    snapshot_message,
)
from tidings.core.publication import Publication
from tidings.protocol.session import Session

# The node's subscriptions: logged under its name, as they always were.
log = logging.getLogger("tidings.node")
trace = logging.getLogger("tidings.debug")

SnapshotProvider = Callable[[App, str, str], Awaitable[bytes]]
"""``(app, channel, socket_id) -> body``: the snapshot of a live channel for one subscribing
socket, the JSON ``{"rows": [...], "version": V}``. Raises
:class:`~tidings.core.live_hold.SnapshotFailed` with a message for the client; any other
exception is logged and the client told only that the snapshot failed."""


class LiveConnection(Protocol):
    """What a live subscription needs of the node's ``Connection``."""

    @property
    def socket_id(self) -> str: ...

    @property
    def session(self) -> Session: ...

    @property
    def app(self) -> App: ...

    def send(self, message: bytes) -> None: ...

    def publish(self, publication: Publication) -> None: ...


C = TypeVar("C", bound=LiveConnection)


class SnapshotResult(StrEnum):
    """How one live subscription's snapshot ended (the ``result`` label in ``/metrics``)."""

    OK = "ok"  # sent, with the events held meanwhile
    TIMEOUT = "timeout"  # not there within live_snapshot_timeout (the wait for a slot counts)
    REFUSED = "refused"  # the provider raised SnapshotFailed (standalone: not 200, unreachable)
    INVALID = "invalid"  # the body was not {"rows", "version"} JSON within the size limit
    ERROR = "error"  # the provider raised anything else: a bug, logged with its traceback
    OVERFLOW = "overflow"  # more was published meanwhile than the hold keeps
    ABANDONED = "abandoned"  # the socket unsubscribed or closed first (or the node stopped)


@dataclass(slots=True)
class LiveStats:
    """Totals since start of one app's live subscriptions, for ``/metrics``."""

    snapshots: dict[SnapshotResult, int] = field(
        default_factory=lambda: dict.fromkeys(SnapshotResult, 0)
    )
    # Holds that overflowed, by the setting whose bound was passed (core/live_hold.py).
    overflows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HOLD_BOUNDS, 0))
    released: int = 0  # events held while a snapshot was fetched, then sent after it


@dataclass(slots=True, eq=False)
class PendingSnapshot(Generic[C]):
    """A live subscription between ``subscription_succeeded`` and its snapshot."""

    connection: C
    hub: Hub
    hold: LiveHold
    provider: SnapshotProvider
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.connection.app.id, self.connection.socket_id, self.hold.channel)


class LiveSubscriptions(Generic[C]):
    """This node's live subscriptions waiting for their snapshot.

    ``flush`` writes the publications of the current tick (the node's Coalescer); ``spawn``
    runs a fetch as one of the node's tasks (cancelled when it closes); ``refuse`` ends a
    subscription whose snapshot failed: unsubscribe the socket, then send it the refusal.
    """

    def __init__(
        self,
        flush: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        refuse: Callable[[C, str, bytes], Awaitable[None]],
    ) -> None:
        self._flush = flush
        self._spawn = spawn
        self._refuse = refuse
        self._pending: dict[tuple[str, str, str], PendingSnapshot[C]] = {}
        # The fetches each app may run at once (made on first use, on the node's loop).
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._stats: dict[str, LiveStats] = {}

    def __len__(self) -> int:
        """Subscriptions waiting for their snapshot, every app included."""
        return len(self._pending)

    def waiting(self, app: App) -> int:
        """``app``'s subscriptions waiting for their snapshot now."""
        return sum(1 for app_id, _, _ in self._pending if app_id == app.id)

    def stats(self, app: App) -> LiveStats:
        """What ``app``'s live subscriptions came to since start."""
        stats = self._stats.get(app.id)
        if stats is None:
            stats = self._stats[app.id] = LiveStats()
        return stats

    def hold(
        self, hub: Hub, connection: C, channel: str, provider: SnapshotProvider
    ) -> PendingSnapshot[C]:
        """Put a hold in ``hub`` in the connection's place on ``channel``: from now on its
        publications are kept until the snapshot is sent. Call :meth:`fetch` next."""
        app, socket_id = connection.app, connection.socket_id
        self.drop(app, socket_id, channel)

        def overflowed() -> None:
            # Called mid-fan-out, where nothing may write to a socket or change the hub:
            # the fetch is cancelled, and its task fails the subscription.
            if hold.overflowed:
                self.stats(app).overflows[hold.overflowed] += 1
            if pending.task is not None:
                pending.task.cancel()

        # Held bytes are bounded like the snapshot itself.
        hold = LiveHold(
            socket_id,
            channel,
            app.live_hold_max_messages,
            app.live_snapshot_max_bytes,
            overflowed,
        )
        pending = PendingSnapshot(connection, hub, hold, provider)
        self._pending[pending.key] = pending
        hub.add(channel, hold)
        return pending

    def fetch(self, pending: PendingSnapshot[C]) -> None:
        """Ask for the snapshot in a task of its own (once ``subscription_succeeded`` is sent)."""
        pending.task = self._spawn(self._snapshot(pending))

    def drop(self, app: App, socket_id: str, channel: str) -> None:
        """Forget a subscription that went away (unsubscribed, closed): its fetch is
        cancelled. Nothing happens if it was not waiting."""
        pending = self._pending.pop((app.id, socket_id, channel), None)
        if pending is not None and pending.task is not None:
            pending.task.cancel()

    def _current(self, pending: PendingSnapshot[C]) -> bool:
        return self._pending.get(pending.key) is pending

    async def _snapshot(self, pending: PendingSnapshot[C]) -> None:
        """Fetch the snapshot, then send it and what was held, or fail the subscription."""
        connection, hold = pending.connection, pending.hold
        app, channel, socket_id = connection.app, hold.channel, connection.socket_id
        slots = self._slots.get(app.id)
        if slots is None:
            slots = self._slots[app.id] = asyncio.Semaphore(app.live_snapshot_concurrency)
        results = self.stats(app).snapshots
        result: SnapshotResult
        try:
            # The timeout counts the wait for a slot: a client waits that long at most.
            async with asyncio.timeout(app.live_snapshot_timeout), slots:
                body = await pending.provider(app, channel, socket_id)
        except asyncio.CancelledError:
            if not self._current(pending) or not hold.overflowed:
                results[SnapshotResult.ABANDONED] += 1
                raise  # unsubscribed, closed or shut down: drop() cleaned up
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            result, reason = SnapshotResult.OVERFLOW, self._overflowed(app)
        except TimeoutError:
            result = SnapshotResult.TIMEOUT
            reason = f"no snapshot within {app.live_snapshot_timeout:g} s"
        except SnapshotFailed as exc:
            result, reason = SnapshotResult.REFUSED, str(exc)
        except Exception:
            log.exception("snapshot of %s for %s failed", channel, socket_id)
            result = SnapshotResult.ERROR
            reason = "the snapshot provider failed (see the server log)"
        else:
            try:
                message = snapshot_message(channel, body, app.live_snapshot_max_bytes)
            except SnapshotFailed as exc:
                result, reason = SnapshotResult.INVALID, str(exc)
            else:
                if self._release(pending, message):
                    results[SnapshotResult.OK] += 1
                    return
                if not self._current(pending) or connection.session.closed:
                    # Gone meanwhile: its unsubscribe or detach forgets it (drop()).
                    results[SnapshotResult.ABANDONED] += 1
                    return
                result, reason = SnapshotResult.OVERFLOW, self._overflowed(app)
        await self._failed(pending, result, reason)

    @staticmethod
    def _overflowed(app: App) -> str:
        return (
            f"more than {app.live_hold_max_messages} events or "
            f"{app.live_snapshot_max_bytes} bytes arrived while the snapshot was fetched"
        )

    def _release(self, pending: PendingSnapshot[C], message: bytes) -> bool:
        """Send the snapshot and the held events, and swap the hold for the connection, in
        this one tick; False if the subscription is gone or its hold overflowed."""
        connection, hold = pending.connection, pending.hold
        if not self._current(pending) or connection.session.closed:
            return False
        # Publications of this tick not yet written reach the hold first...
        self._flush()
        if hold.overflowed:
            return False
        del self._pending[pending.key]
        # ...then the connection takes the hold's place: whatever is published from here on
        # is written at the end of the tick, after the snapshot and the held events below.
        pending.hub.add(hold.channel, connection)
        events = hold.release()
        connection.send(message)
        if events:
            # Counted as deliveries when the hold took them: written, not counted again.
            connection.publish(Publication(events))
            self.stats(connection.app).released += len(events)
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(
                "%s got the snapshot of %s (%d bytes) and %d held event(s)",
                connection.socket_id,
                hold.channel,
                len(message),
                len(events),
            )
        return True

    async def _failed(
        self, pending: PendingSnapshot[C], result: SnapshotResult, reason: str
    ) -> None:
        """Forget the subscription (held events are dropped) and have the node end it."""
        results = self.stats(pending.connection.app).snapshots
        if not self._current(pending):
            results[SnapshotResult.ABANDONED] += 1
            return
        results[result] += 1
        del self._pending[pending.key]
        channel, connection = pending.hold.channel, pending.connection
        log.warning("snapshot of %s for %s failed: %s", channel, connection.socket_id, reason)
        await self._refuse(connection, channel, snapshot_failure(channel, reason))
