"""The node's side of history, for one app: positioned deliveries, gap-filling, and the
catch-up of a socket that subscribes with the Tidings opt-in (``docs/recovery.md``).

The decisions are the core's (:class:`~tidings.core.gaps.Gaps`,
:class:`~tidings.core.recovery.Catchup`); this module only awaits the history store and
writes to connections. Three rules it keeps:

- **stock sockets notice nothing**: a socket that did not opt in stays in the hub's stock
  set and gets the bytes it always got; only positioned sockets get the spliced copy;
- **nothing published in between**: the catch-up is put in the hub *before* the history
  is read, and swapped for the connection in the same loop tick as it is settled, so every
  publication reaches the socket exactly once (from the page or from what was held);
- **in order or reconnect**: a channel's positioned deliveries go out in offset order; a
  hole the history cannot fill closes the channel's sockets with 4200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from tidings.brokers.history import HistoryUnavailable
from tidings.core.apps import App, HistoryRule
from tidings.core.counters import AppCounters
from tidings.core.gaps import Arrival, Gaps, Verdict
from tidings.core.hub import Coalescer, Hub
from tidings.core.publication import Publication
from tidings.core.recovery import Catchup, Located, Settled, StoredEvent
from tidings.protocol.errors import ErrorCode
from tidings.protocol.recovery import OptIn

log = logging.getLogger("tidings.recovery")

# What one channel may pile up while a fill or a catch-up reads the history: past it the
# socket (catch-up) or the channel's sockets (fill) are closed with 4200 and reconnect.
MAX_HELD_MESSAGES = 10_000
MAX_HELD_BYTES = 16 * 1024 * 1024

# How long a catch-up waits for the bus to bring this node up to the position it read (a
# publication reaches the store's reader before its pub/sub copy reaches this node).
BUS_WAIT = 2.0

# The periodic position check (:meth:`AppRecovery.check`): a channel is checked for this
# many checks after its last delivery here, at most this many channels per app per check.
CHECKS_AFTER_TRAFFIC = 12
MAX_CHECKED = 1_000

GAP_UNFILLED = "Missed events could not be recovered from the channel history"
CATCHUP_OVERFLOWED = "Too many events arrived while the channel history was read"
EPOCH_CHANGED = "The channel history was reset"


class Page(Protocol):
    @property
    def position(self) -> Located: ...

    @property
    def events(self) -> Sequence[StoredEvent]: ...

    @property
    def complete(self) -> bool: ...


class HistoryReader(Protocol):
    """What the node reads of ``broker.history`` (``tidings.brokers.history.History``)."""

    async def position(self, app_id: str, channel: str, *, ttl: float) -> Located: ...

    async def since(self, app_id: str, channel: str, offset: int, limit: int) -> Page: ...

    async def positions(self, app_id: str, channels: Sequence[str]) -> Sequence[Located | None]: ...


class Socket(Protocol):
    """A connection as recovery sees it (the node's ``Connection``)."""

    @property
    def socket_id(self) -> str: ...

    def publish(self, publication: Publication) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class AppRecovery:
    """History on this node for one app's channels."""

    __slots__ = (
        "app",
        "_hub",
        "_counters",
        "_outgoing",
        "_history",
        "_spawn",
        "_socket",
        "_gaps",
        "_catchups",
        "_waiters",
        "_active",
        "_recent",
    )

    def __init__(
        self,
        app: App,
        hub: Hub,
        counters: AppCounters,
        outgoing: Coalescer,
        history: Callable[[], HistoryReader],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        socket: Callable[[str], Socket | None],
    ) -> None:
        self.app = app
        self._hub = hub
        self._counters = counters
        self._outgoing = outgoing
        self._history = history  # the broker's, looked up when needed
        self._spawn = spawn
        self._socket = socket  # a connection of this app by socket id
        self._gaps = Gaps(MAX_HELD_MESSAGES)
        self._catchups: dict[tuple[str, str], Catchup] = {}
        # Catch-ups waiting for the bus to deliver a channel up to an offset.
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        # The periodic check: channels delivered to since the last check, and the channels
        # to check with the checks each has left (oldest checked first).
        self._active: set[str] = set()
        self._recent: dict[str, int] = {}

    # -- deliveries from the bus -------------------------------------------------------------

    def deliver(
        self, channel: str, message: bytes, exclude: str | None, offset: int, epoch: str
    ) -> None:
        """A positioned publication for ``channel``'s local subscribers: delivered in offset
        order, after filling any hole before it."""
        if not self._hub.count(channel):
            return  # nobody here: nothing to keep in order (and nothing to track)
        self._active.add(channel)
        arrival = Arrival(offset, message, exclude)
        match self._gaps.arrive(channel, epoch, arrival):
            case Verdict.DELIVER:
                self._outgoing.add(self._hub, channel, message, exclude, self._counters, offset)
                self._wake(channel, offset)
            case Verdict.DUPLICATE | Verdict.HELD:
                pass
            case Verdict.FILL:
                self._spawn(self._fill(channel))
            case Verdict.NEW_EPOCH:
                # Offsets of the old epoch mean nothing now: opted-in sockets reconnect and
                # are told to re-fetch; stock sockets just go on.
                self._close(self._hub.positioned_subscribers(channel), EPOCH_CHANGED)
                self._outgoing.add(self._hub, channel, message, exclude, self._counters, offset)
                self._wake(channel, None)
            case Verdict.OVERFLOW:
                self._counters.gaps_unfilled += 1
                self._close(self._hub.subscribers(channel), GAP_UNFILLED)
                self._wake(channel, None)

    async def _fill(self, channel: str) -> None:
        after = self._gaps.filling_after(channel)
        rule = self.app.history_rule(channel)
        page: Page | None = None
        if after is not None and rule is not None:
            try:
                page = await self._history().since(self.app.id, channel, after, rule.size)
            except Exception:
                log.exception("reading the history of %s to fill a gap failed", channel)
        if self._gaps.filling_after(channel) is None:
            return  # forgotten meanwhile: overflowed, or nobody is left
        if page is None:
            out = self._gaps.filled(channel, None, (), False)
        else:
            out = self._gaps.filled(channel, page.position, page.events, page.complete)
        if out is None:
            self._counters.gaps_unfilled += 1
            log.warning("a gap in %s could not be filled: closing its sockets", channel)
            self._close(self._hub.subscribers(channel), GAP_UNFILLED)
            self._wake(channel, None)
            return
        self._counters.gaps_filled += 1
        for a in out:
            self._outgoing.add(self._hub, channel, a.message, a.exclude, self._counters, a.offset)
        if out:
            self._wake(channel, out[-1].offset)

    async def check(self) -> None:
        """The periodic position check: the one way to notice a lost *last* publication.

        A hole shows when the next publication arrives; when none follows, only the
        channel's position in the store tells. Checked here: channels with local
        subscribers that had deliveries within the last :data:`CHECKS_AFTER_TRAFFIC`
        checks but none since the previous one (a busy channel shows a hole by itself, and
        would race its own publications in flight), at most :data:`MAX_CHECKED`, with one
        batched meta read. A channel found past what was delivered here is filled from its
        history as a jump is (and closed with 4200 if that fails)."""
        active, self._active = self._active, set()
        for channel in active:
            self._recent.pop(channel, None)
            self._recent[channel] = CHECKS_AFTER_TRAFFIC
        due: list[str] = []
        for channel, left in list(self._recent.items()):
            if len(due) >= MAX_CHECKED:
                break
            if channel in active:
                continue
            del self._recent[channel]  # back at the end: the others go first next time
            if not self._hub.count(channel) or self._gaps.filling_after(channel) is not None:
                continue
            if left > 1:
                self._recent[channel] = left - 1
            due.append(channel)
        if not due:
            return
        try:
            tops = await self._history().positions(self.app.id, due)
        except HistoryUnavailable:
            return  # an outage: the next check, or the next publication, tells
        for channel, top in zip(due, tops, strict=True):
            if top is not None and self._hub.count(channel) and self._gaps.behind(channel, top):
                log.info("%s is behind its history (%d): filling", channel, top.offset)
                self._spawn(self._fill(channel))

    def _wake(self, channel: str, offset: int | None) -> None:
        """The bus delivered ``channel`` up to ``offset`` (None: it never will, in this
        epoch): wake the catch-ups waiting for it."""
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        keep = []
        for needed, future in waiters:
            if offset is None or needed <= offset:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((needed, future))
        if keep:
            self._waiters[channel] = keep
        else:
            del self._waiters[channel]

    async def _bus_reaches(self, channel: str, top: Located) -> None:
        """Wait (at most :data:`BUS_WAIT`) until the bus delivered ``channel`` up to
        ``top`` here, so no publication the read covered can reach the socket after it
        takes the catch-up's place (it is dropped by the catch-up, or as a duplicate).

        Nothing to wait for when no offset of this epoch was delivered yet: the gap
        tracker is then seeded with ``top`` and drops older ones as duplicates."""
        last = self._gaps.last(channel, top.epoch)
        if last is None or last >= top.offset:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append((top.offset, future))
        try:
            async with asyncio.timeout(BUS_WAIT):
                await future
        except TimeoutError:
            log.debug("the bus did not bring %s to %d within %s s", channel, top.offset, BUS_WAIT)
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                waiters[:] = [w for w in waiters if w[1] is not future]
                if not waiters:
                    del self._waiters[channel]

    def _close(self, subscribers: Any, reason: str) -> None:
        for subscriber in list(subscribers):
            socket = self._socket(subscriber.socket_id)
            if socket is None:
                continue
            try:
                self._counters.count_close(int(ErrorCode.RECONNECT))
                socket.close(int(ErrorCode.RECONNECT), reason)
            except Exception:
                log.exception("closing %s failed", subscriber.socket_id)

    # -- subscriptions -----------------------------------------------------------------------

    def rule(self, channel: str, opt_in: OptIn | None) -> HistoryRule | None:
        """The history rule that makes an opt-in count (None: a stock subscription)."""
        return self.app.history_rule(channel) if opt_in is not None else None

    async def catch_up(
        self, socket: Socket, channel: str, opt_in: OptIn, rule: HistoryRule
    ) -> Settled | None:
        """Read the channel's position (and what ``socket`` missed), holding its live
        publications meanwhile, then put it in the hub as a positioned subscriber.

        Returns what to send after ``subscription_succeeded``, or None when the socket
        left, closed or overflowed meanwhile (it is then not in the hub)."""
        socket_id = socket.socket_id
        key = (socket_id, channel)

        def overflowed() -> None:  # mid-fan-out: only schedule
            self._spawn(self._overflowed(key, catchup))

        catchup = Catchup(socket_id, channel, MAX_HELD_MESSAGES, MAX_HELD_BYTES, overflowed)
        self._catchups[key] = catchup
        self._hub.add(channel, catchup, positioned=True)
        resume = opt_in.resume
        try:
            history = self._history()
            if resume is None:
                top = await history.position(self.app.id, channel, ttl=rule.ttl)
                events: Sequence[StoredEvent] = ()
                complete = False
            else:
                page = await history.since(self.app.id, channel, resume.offset, rule.size)
                top, events, complete = page.position, page.events, page.complete
        except Exception as exc:
            # The store is out of reach (a Redis outage): the subscription goes on as a
            # stock one rather than fail, or loop through reconnects until Redis is back.
            if isinstance(exc, HistoryUnavailable):
                log.warning("no history for %s's subscription to %s: %s", socket_id, channel, exc)
            else:
                log.exception("reading the history of %s for %s failed", channel, socket_id)
            if self._catchups.get(key) is not catchup:
                return None
            self._outgoing.flush()
            del self._catchups[key]
            if catchup.overflowed:
                self._hub.remove(channel, socket_id)
                return None
            self._hub.add(channel, socket)
            return Settled("", 0, None, catchup.release(), 0, positioned=False)
        except BaseException:
            if self._catchups.get(key) is catchup:
                del self._catchups[key]
                self._hub.remove(channel, socket_id)
            raise
        await self._bus_reaches(channel, top)
        if self._catchups.get(key) is not catchup:
            return None  # unsubscribed or closed while we read
        # Publications of this tick not yet written reach the catch-up first...
        self._outgoing.flush()
        del self._catchups[key]
        if catchup.overflowed:
            self._hub.remove(channel, socket_id)
            return None
        settled = catchup.settle(top, resume, events, complete)
        # ...then the socket takes its place, in this tick: what is published from here on
        # is written after the caller sends subscription_succeeded and ``settled.messages``.
        self._hub.add(channel, socket, positioned=True)
        self._gaps.seed(channel, top)
        if settled.recovered is True:
            self._counters.recovered += 1
        elif settled.recovered is False:
            self._counters.unrecovered += 1
        return settled

    async def _overflowed(self, key: tuple[str, str], catchup: Catchup) -> None:
        if self._catchups.get(key) is not catchup:
            return
        socket = self._socket(key[0])
        if socket is not None:
            self._close([socket], CATCHUP_OVERFLOWED)

    def left(self, socket_id: str, channel: str) -> None:
        """``socket_id`` left ``channel`` (the hub already forgot it)."""
        self._catchups.pop((socket_id, channel), None)
        if not self._hub.count(channel):
            self._gaps.forget(channel)
            self._recent.pop(channel, None)
            self._active.discard(channel)
