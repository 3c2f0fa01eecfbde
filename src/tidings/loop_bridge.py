"""Await work that runs on another thread's event loop, woken once per batch.

``asyncio.run_coroutine_threadsafe`` plus ``asyncio.wrap_future`` cost each call a
``concurrent.futures.Future`` with its lock, a chain of callbacks, and a wake-up of each loop
(a write to its self-pipe or eventfd, a system call). A caller loop that awaits many calls
at once (an async app publishing through ``Realtime.client``) pays that per call.

A :class:`LoopBridge` queues the calls of every caller for its home loop and wakes it once
for all the calls queued since it last ran; the answers go back the same way, once per
caller loop per batch. A call is a coroutine (:meth:`LoopBridge.call`: run as a task; its
result or exception is the answer, and cancelling the await cancels it, as with
``run_coroutine_threadsafe``), or a plain function that queues work and answers later
through a :class:`Reply` (:meth:`LoopBridge.post`: no task at all).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["LoopBridge", "Reply"]


class _Call:
    """One call on its way to the home loop and its answer on its way back."""

    __slots__ = ("coroutine", "post", "future", "caller", "task")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, Any] | None,
        post: Callable[[Reply], None] | None,
        future: asyncio.Future[Any],
        caller: asyncio.AbstractEventLoop,
    ) -> None:
        self.coroutine = coroutine  # run as a task (call), or
        self.post = post  # called with its Reply (post)
        self.future = future  # on the caller's loop
        self.caller = caller
        self.task: asyncio.Task[Any] | None = None  # a coroutine's, on the home loop


class Reply:
    """The answer to one :meth:`LoopBridge.post`, given once on the home loop; what the
    caller awaits gets it. Shaped like the part of a future that answers."""

    __slots__ = ("_bridge", "_call", "_answered")

    def __init__(self, bridge: LoopBridge, call: _Call) -> None:
        self._bridge = bridge
        self._call = call
        self._answered = False

    def done(self) -> bool:
        return self._answered

    def set_result(self, result: object) -> None:
        self._answer(None, result)

    def set_exception(self, error: BaseException) -> None:
        self._answer(error, None)

    def _answer(self, error: BaseException | None, result: object) -> None:
        if self._answered:
            raise asyncio.InvalidStateError("answered already")
        self._answered = True
        self._bridge._answer(self._call, False, error, result)  # noqa: SLF001


# (call, cancelled, exception, result)
_Answer = tuple[_Call, bool, BaseException | None, object]


class LoopBridge:
    """Work run on ``home`` for callers on other loops (:meth:`call`, :meth:`post`)."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._inbox: list[_Call] = []  # queued for the home loop, in call order
        # Answers for each caller loop, not yet handed over; a key while a hand-over is due.
        self._outbox: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        # The last caller's loop and thread: asyncio.get_running_loop() makes a getpid
        # system call, and on that thread while that loop runs it is the running loop.
        self._caller: tuple[int, asyncio.AbstractEventLoop] | None = None

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the home loop and await its outcome from the running one."""
        result: T = await self._queue(coroutine, None)
        return result

    async def post(self, start: Callable[[Reply], None]) -> Any:
        """Call ``start(reply)`` on the home loop, in call order with every other call, and
        await what it (or whatever it hands ``reply`` to) answers. ``start`` must not block;
        what it raises is the answer. Cancelling the await leaves the work as it is."""
        return await self._queue(None, start)

    async def _queue(
        self, coroutine: Coroutine[Any, Any, Any] | None, post: Callable[[Reply], None] | None
    ) -> Any:
        caller = self._caller_loop()
        future: asyncio.Future[Any] = caller.create_future()
        call = _Call(coroutine, post, future, caller)
        with self._lock:
            self._inbox.append(call)
            wake = len(self._inbox) == 1  # else a wake-up is already due
        if wake:
            try:
                self.home.call_soon_threadsafe(self._start)
            except RuntimeError:  # the home loop is closed
                with self._lock:
                    self._inbox.remove(call)
                if coroutine is not None:
                    coroutine.close()
                raise
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():  # the caller's await was cancelled: so is the call
                self._cancel_soon(call)
            raise

    def _caller_loop(self) -> asyncio.AbstractEventLoop:
        thread, last = threading.get_ident(), self._caller
        if last is not None and last[0] == thread and last[1].is_running():
            return last[1]
        loop = asyncio.get_running_loop()
        self._caller = (thread, loop)
        return loop

    def _cancel_soon(self, call: _Call) -> None:
        try:
            self.home.call_soon_threadsafe(self._cancel, call)
        except RuntimeError:  # the home loop is closed: nothing runs there any more
            pass

    # -- on the home loop ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            calls, self._inbox = self._inbox, []
        behind_a_task = False
        for call in calls:
            if call.coroutine is not None:
                task = self.home.create_task(call.coroutine)
                call.task = task
                task.add_done_callback(functools.partial(self._finished, call))
                behind_a_task = True
            elif behind_a_task:
                # A task's first step runs from the loop's queue: a call posted after it
                # waits its turn there too, never overtaking it (one caller's order).
                self.home.call_soon(self._post, call)
            else:
                self._post(call)

    def _post(self, call: _Call) -> None:
        assert call.post is not None
        reply = Reply(self, call)
        try:
            call.post(reply)
        except Exception as exc:  # the call's own refusal: its answer
            if not reply.done():
                reply.set_exception(exc)

    def _cancel(self, call: _Call) -> None:
        # Queued after the _start that made its task (both go through the home loop's
        # queue in order), so the task exists; cancelled before its first step, the
        # coroutine never runs a line. A posted call has no task: its work goes on.
        if call.task is not None:
            call.task.cancel()

    def _finished(self, call: _Call, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._answer(call, True, None, None)
        elif (error := task.exception()) is not None:
            self._answer(call, False, error, None)
        else:
            self._answer(call, False, None, task.result())

    def _answer(
        self, call: _Call, cancelled: bool, error: BaseException | None, result: object
    ) -> None:
        caller = call.caller
        with self._lock:
            due = caller not in self._outbox
            self._outbox.setdefault(caller, []).append((call, cancelled, error, result))
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
        for call, cancelled, error, result in answers:
            future = call.future
            if future.done():
                continue  # cancelled by its caller
            if cancelled:
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
