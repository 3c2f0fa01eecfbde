"""Tidings' drain before the ASGI server's own shutdown, on SIGTERM and SIGINT.

ASGI tells an app of a shutdown only with ``lifespan.shutdown``, and uvicorn and hypercorn
send it after the connections are gone: uvicorn closes every WebSocket with 1012 and
waits for open responses (an ``xhr_streaming`` stream never ends by itself), hypercorn
waits ``--graceful-timeout`` seconds and then cuts them. Too late to tell clients 4200.

So :class:`SignalDrain` stands in front of the server's signal handlers: the signal starts
Tidings' drain on the loop, and only once it is done does the signal reach the handler it
replaced, which shuts the server down as it would have (a handler that is a Python
function is called, the default action is taken by raising the signal again). A second
signal does not wait: it cuts short what is left of ``shutdown_ready_delay`` and reaches
the server's handler at once (uvicorn: a further Ctrl+C then quits without waiting). A
signal the process ignores (hypercorn's workers ignore SIGINT) stays ignored.

Handlers set with ``loop.add_signal_handler`` (hypercorn ``--workers 0``) run from the
loop's wakeup file descriptor whatever Python-level handler is installed: that server's
shutdown then starts at the same time as the drain, and waits ``--graceful-timeout``
seconds for the connections the drain is closing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from tidings.tasks import spawn

log = logging.getLogger("tidings.asgi")

SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], Any] | int | None  # signal.getsignal()'s answer


class SignalDrain:
    """SIGTERM and SIGINT run ``drain`` before the handlers they had (see the module); a
    second signal calls ``hurry`` (on the loop) and reaches them at once."""

    def __init__(
        self, drain: Callable[[], Coroutine[Any, Any, None]], hurry: Callable[[], None]
    ) -> None:
        self._drain = drain
        self._hurry = hurry
        self._previous: dict[int, Handler] = {}
        self._handler = self._on_signal  # one bound method, so `is` finds it installed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._received = False
        self._passed_on = False
        self._task: asyncio.Task[None] | None = None  # the drain (the loop keeps weak refs)

    def install(self) -> bool:
        """Chain the handlers, from the server's loop; False where nothing was installed:
        Python handles signals in the main thread only (a server run in another thread
        keeps its own way of stopping)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            # None: a handler set outside Python, which cannot be called from here.
            if previous is signal.SIG_IGN or previous is None:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handler)
        return bool(self._previous)

    def uninstall(self) -> None:
        """Give each signal back its handler, unless another one replaced ours since."""
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) is self._handler:
                signal.signal(signum, previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Python runs this in the main thread between two bytecodes, maybe in the middle of
        # the loop's own code (or of a log line): it only schedules, and logs from the loop.
        loop = self._loop
        if loop is None or loop.is_closed():
            self._pass_on(signum)
        elif self._received:
            loop.call_soon_threadsafe(self._hurry_on, signum)
            self._pass_on(signum)
        else:
            self._received = True
            loop.call_soon_threadsafe(self._start, signum)

    def _start(self, signum: int) -> None:
        log.info("received %s: draining (every client is told to reconnect)", _name(signum))
        self._task = spawn(self._drain_then_pass_on(signum), "drain on signal")

    def _hurry_on(self, signum: int) -> None:
        log.info("received %s again: the server shuts down now", _name(signum))
        self._hurry()

    async def _drain_then_pass_on(self, signum: int) -> None:
        try:
            await self._drain()
        finally:
            if not self._passed_on:  # a second signal may have passed on already
                self._pass_on(signum)

    def _pass_on(self, signum: int) -> None:
        """Restore the handlers, then hand ``signum`` to the one it had."""
        self._passed_on = True
        self.uninstall()
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, None)
        else:  # the default action (SIGTERM ends the process), as without Tidings
            signal.raise_signal(signum)


def _name(signum: int) -> str:
    return signal.Signals(signum).name
