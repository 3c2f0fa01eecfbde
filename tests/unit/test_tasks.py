"""tasks.py: a background task's failure is always retrieved and logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidings.tasks import spawn


async def test_a_failed_task_is_logged_with_its_name_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = spawn(broken(), "broken loop")
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done-callbacks run on the next loop pass
    (record,) = [r for r in caplog.records if r.name == "tidings.tasks"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "background task broken loop failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"


async def test_cancelled_and_finished_tasks_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def fine() -> int:
        return 1

    done = spawn(fine(), "fine")
    assert await done == 1
    cancelled = spawn(asyncio.sleep(10), "sleeper")
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.wait([cancelled])
    await asyncio.sleep(0)
    assert [r for r in caplog.records if r.name == "tidings.tasks"] == []
