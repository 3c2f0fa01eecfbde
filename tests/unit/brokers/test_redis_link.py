"""brokers/redis/link.py: the one place that decides between Redis and a local answer.

The commands here are plain coroutines (the unit is the link, not Redis): a command that
raises what redis-py raises on an outage must give the fallback and start an outage, and
nothing may reach Redis until a resync ends it. Real Redis outages are tested in
tests/cluster/test_redis_outage.py and tests/integration/test_redis_unreachable.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tidings.brokers.redis.link import POOL_SIZE, RedisLink


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


async def test_commands_past_the_pool_wait_their_turn_in_arrival_order(link: RedisLink) -> None:
    """A burst waits in the link, first come first served, never more than POOL_SIZE in
    flight. redis-py's own pool let a late command take a freed connection before earlier
    ones, which then timed out (an outage) while Redis was idle."""
    link.healthy()
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(POOL_SIZE + 3)]

    def command(i: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            started.append(i)
            await gates[i].wait()
            return i

        return run

    async def until_started(n: int) -> None:
        async with asyncio.timeout(5):
            while len(started) < n:
                await asyncio.sleep(0)

    calls = [asyncio.create_task(link.call(command(i), lambda: -1)) for i in range(len(gates))]
    await until_started(POOL_SIZE)
    for _ in range(10):  # the loop turns over: nothing more starts
        await asyncio.sleep(0)
    assert started == list(range(POOL_SIZE))  # the other three wait
    gates[5].set()
    assert await calls[5] == 5
    await until_started(POOL_SIZE + 1)
    assert started[-1] == POOL_SIZE  # the first to wait goes first
    for gate in gates:
        gate.set()
    assert await asyncio.gather(*calls) == list(range(len(gates)))
    assert started == list(range(len(gates)))
