"""Background tasks whose failures are always seen.

asyncio keeps a task's exception until someone asks for it and only mentions it, if at all,
when the task is garbage-collected: a loop that dies that way stops without a word. Every
task Tidings starts in the background goes through :func:`spawn` (or gets
:func:`report_failure` as a done-callback), which retrieves the exception and logs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("tidings.tasks")

T = TypeVar("T")


def report_failure(task: asyncio.Future[Any]) -> None:
    """Done-callback: log the task's exception (a cancellation is not a failure)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.error("background task %s failed", name, exc_info=exc)


def spawn(coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Run ``coroutine`` as a task whose failure is logged once it ends."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    task.add_done_callback(report_failure)
    return task
