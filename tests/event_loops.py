"""Running a test body on asyncio's own loop or on uvloop (their transports differ)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import uvloop

LOOPS = ["asyncio", "uvloop"]


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on a new loop of that kind, then close the loop.

    The loop factory keeps the Runner from replacing the thread's current event loop, which
    asyncio.run does: the loop pytest-asyncio left there would be dropped unclosed (a
    ResourceWarning that fails whichever later test the garbage collector runs in)."""
    new_loop = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main)
