"""brokers/redis/link.py: the one place that decides between Redis and a local answer.

The commands here are plain coroutines (the unit is the link, not Redis): a command that
raises what redis-py raises on an outage must give the fallback and start an outage, and
nothing may reach Redis until a resync ends it. Real Redis outages are tested in
tests/cluster/test_redis_outage.py and tests/integration/test_redis_unreachable.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tidings.brokers.redis.link import RedisLink


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    link = RedisLink("redis://127.0.0.1:1/0", "test", "n1", sharded=False)
    yield link
    await link.close()


async def test_degraded_until_the_first_resync(link: RedisLink) -> None:
    ran: list[str] = []

    async def command() -> str:
        ran.append("command")
        return "from redis"

    assert link.degraded is True
    assert await link.call(command, lambda: "local") == "local"
    assert ran == []
    assert link.healthy() is False  # a first connection is no recovery
    assert await link.call(command, lambda: "local") == "from redis"
    assert ran == ["command"]
    assert link.connected.is_set()


@pytest.mark.parametrize("failure", [RedisConnectionError("gone"), OSError(), TimeoutError()])
async def test_a_failed_command_answers_locally_and_starts_an_outage(
    link: RedisLink, failure: Exception
) -> None:
    link.healthy()
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise failure

    assert await link.call(failing, lambda: 7) == 7
    assert (link.degraded, link.resync_needed, link.connected.is_set()) == (True, True, False)
    assert await link.call(failing, lambda: 8) == 8
    assert calls == 1  # no command is tried while degraded: the listener reconnects
    assert link.healthy() is True  # the end of an outage after a healthy period
    assert (link.degraded, link.resync_needed) == (False, False)


async def test_a_bug_is_not_an_outage(link: RedisLink) -> None:
    link.healthy()

    async def buggy() -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await link.call(buggy, lambda: 0)
    assert link.degraded is False
