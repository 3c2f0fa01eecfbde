"""Await coroutines that run on another thread's event loop, woken once per batch.

``asyncio.run_coroutine_threadsafe`` plus ``asyncio.wrap_future`` cost each call a
``concurrent.futures.Future`` with its lock, a chain of callbacks, and a wake-up of each loop
(a write to its self-pipe or eventfd, a system call). A caller loop that awaits many calls
at once (an async app publishing through ``Realtime.client``) pays that per call.

A :class:`LoopBridge` queues the calls of every caller for its home loop and wakes it once
for all the calls queued since it last ran; the answers go back the same way, once per
caller loop per batch. What each caller sees is what ``run_coroutine_threadsafe`` gives:
the coroutine's result or exception, and cancelling the await cancels the coroutine (or
keeps it from starting).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopBridge"]


class _Call:
    """One coroutine on its way to the home loop and its answer on its way back."""

    __slots__ = ("coroutine", "future", "caller", "task")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, Any],
        future: asyncio.Future[Any],
        caller: asyncio.AbstractEventLoop,
    ) -> None:
        self.coroutine = coroutine
        self.future = future  # on the caller's loop
        self.caller = caller
        self.task: asyncio.Task[Any] | None = None  # on the home loop, once started


class LoopBridge:
    """Coroutines run on ``home`` for callers on other loops (:meth:`call`)."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._inbox: list[_Call] = []  # queued for the home loop, in call order
        # Answers for each caller loop, not yet handed over; a key while a hand-over is due.
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Call, asyncio.Task[Any]]]] = {}
        # The last caller's loop and thread: asyncio.get_running_loop() makes a getpid
        # system call, and on that thread while that loop runs it is the running loop.
        self._caller: tuple[int, asyncio.AbstractEventLoop] | None = None

    def _caller_loop(self) -> asyncio.AbstractEventLoop:
        thread, last = threading.get_ident(), self._caller
        if last is not None and last[0] == thread and last[1].is_running():
            return last[1]
        loop = asyncio.get_running_loop()
        self._caller = (thread, loop)
        return loop

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the home loop and await its outcome from the running one."""
        caller = self._caller_loop()
        future: asyncio.Future[T] = caller.create_future()
        call = _Call(coroutine, future, caller)
        with self._lock:
            self._inbox.append(call)
            wake = len(self._inbox) == 1  # else a wake-up is already due
        if wake:
            try:
                self.home.call_soon_threadsafe(self._start)
            except RuntimeError:  # the home loop is closed
                with self._lock:
                    self._inbox.remove(call)
                coroutine.close()
                raise
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():  # the caller's await was cancelled: so is the call
                self._cancel_soon(call)
            raise

    def _cancel_soon(self, call: _Call) -> None:
        try:
            self.home.call_soon_threadsafe(self._cancel, call)
        except RuntimeError:  # the home loop is closed: nothing runs there any more
            pass

    # -- on the home loop ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            calls, self._inbox = self._inbox, []
        for call in calls:
            task = self.home.create_task(call.coroutine)
            call.task = task
            task.add_done_callback(functools.partial(self._finished, call))

    def _cancel(self, call: _Call) -> None:
        # Queued after the _start that made its task (both go through the home loop's
        # queue in order), so the task exists; cancelled before its first step, the
        # coroutine never runs a line.
        if call.task is not None:
            call.task.cancel()

    def _finished(self, call: _Call, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here: never "exception was never retrieved"
        caller = call.caller
        with self._lock:
            due = caller not in self._outbox
            self._outbox.setdefault(caller, []).append((call, task))
        if due:
            try:
                caller.call_soon_threadsafe(self._hand_over, caller)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                with self._lock:
                    self._outbox.pop(caller, None)

    # -- on a caller loop ----------------------------------------------------------------

    def _hand_over(self, caller: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            answers = self._outbox.pop(caller, [])
        for call, task in answers:
            future = call.future
            if future.done():
                continue  # cancelled by its caller
            if task.cancelled():
                future.cancel()
            elif (error := task.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(task.result())
