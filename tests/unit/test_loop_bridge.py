"""loop_bridge.py: coroutines run on a home loop in another thread, awaited from callers'
loops, woken once per batch; each caller gets its own outcome, and a cancelled await
cancels its coroutine (or keeps it from starting)."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Iterator

import pytest

from tidings.loop_bridge import LoopBridge, Reply

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


HOME_THREAD = "bridge-home"


@pytest.fixture
def home() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=HOME_THREAD, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(TIMEOUT)
    loop.close()


async def test_each_caller_gets_its_outcome_from_the_home_thread(
    home: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge(home)
    threads: set[str] = set()

    async def work(n: int) -> int:
        threads.add(threading.current_thread().name)
        await asyncio.sleep(0)
        if n % 5 == 0:
            raise ValueError(f"refused {n}")
        return n * 2

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(bridge.call(work(n)) for n in range(50)), return_exceptions=True),
        TIMEOUT,
    )
    for n, outcome in enumerate(outcomes):
        if n % 5 == 0:
            assert isinstance(outcome, ValueError) and str(outcome) == f"refused {n}"
        else:
            assert outcome == n * 2
    assert threads == {HOME_THREAD}


async def test_a_cancelled_await_cancels_the_running_coroutine(
    home: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge(home)
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(bridge.call(forever()))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.to_thread(cancelled.wait, TIMEOUT)


async def test_a_call_cancelled_before_its_first_step_never_runs(
    home: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge(home)
    hold, held = threading.Event(), threading.Event()

    def block() -> None:  # keeps the home loop busy until released
        held.set()
        hold.wait(TIMEOUT)

    home.call_soon_threadsafe(block)
    assert await asyncio.to_thread(held.wait, TIMEOUT)
    ran: list[str] = []

    async def record(name: str) -> str:
        ran.append(name)
        return name

    first = asyncio.ensure_future(bridge.call(record("dropped")))
    second = asyncio.ensure_future(bridge.call(record("kept")))
    await asyncio.sleep(0)  # both queued for the home loop, which is busy
    first.cancel()
    await asyncio.sleep(0)  # the cancel is queued behind the start
    hold.set()
    assert await asyncio.wait_for(second, TIMEOUT) == "kept"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert ran == ["kept"]


async def test_a_closed_home_loop_refuses_at_once() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    bridge = LoopBridge(loop)

    async def never() -> None:
        raise AssertionError("ran on a closed loop")

    with pytest.raises(RuntimeError, match="closed"):
        await bridge.call(never())  # and no "coroutine was never awaited" warning


async def test_posted_calls_answer_through_their_reply_in_call_order_with_tasks(
    home: asyncio.AbstractEventLoop,
) -> None:
    """A posted function runs on the home loop and answers later through its Reply (or
    by raising); it never overtakes a coroutine queued before it by the same caller."""
    bridge = LoopBridge(home)
    order: list[str] = []
    replies: list[Reply] = []

    def queue(name: str, reply: Reply) -> None:
        order.append(name)
        replies.append(reply)
        if len(replies) == 3:  # answered together, later, from the home loop
            home.call_soon(lambda: [r.set_result(i) for i, r in enumerate(replies)])

    def refuse(reply: Reply) -> None:
        order.append("refused")
        raise ValueError("not this one")

    async def coroutine(name: str) -> str:
        order.append(name)
        return name

    calls = [
        bridge.post(functools.partial(queue, "p0")),
        bridge.call(coroutine("c1")),
        bridge.post(functools.partial(queue, "p2")),
        bridge.post(refuse),
        bridge.post(functools.partial(queue, "p4")),
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), TIMEOUT)
    assert order == ["p0", "c1", "p2", "refused", "p4"]
    assert outcomes[:3] == [0, "c1", 1] and outcomes[4] == 2
    assert isinstance(outcomes[3], ValueError)
