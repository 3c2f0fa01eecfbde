"""brokers/redis/pubsub.py: when the publishing node writes its own publications.

The unit is the sender, not Redis: the PUBLISH is a coroutine the test holds, standing for
Redis's round trip. A publication reaches this node's subscribers once Redis has answered,
after its caller has been woken, in the order of the calls, also when Redis fails or the
node goes degraded meanwhile. Real Redis: tests/cluster/test_redis_bus.py and the broker
contract suite (tests/unit/brokers/contract).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tidings.brokers.history import Position
from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.pubsub import RedisPubSub

Publication = tuple[str, str, bytes, str | None]


class HeldRedis:
    """Stands for Redis: each pipeline waits until the test answers it (or fails it)."""

    def __init__(self) -> None:
        self.pipelines: list[list[Publication]] = []
        self.answer = asyncio.Event()
        self.failure: Exception | None = None

    async def publish_many(self, publications: list[Publication]) -> bool:
        self.pipelines.append(publications)
        await self.answer.wait()
        if self.failure is not None:
            raise self.failure
        return True


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    link = RedisLink("redis://127.0.0.1:1/0", "test", "n1", sharded=False)
    link.healthy()
    yield link
    await link.close()


def held_pubsub(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> tuple[RedisPubSub, HeldRedis, list[tuple[bytes, bool | None]]]:
    """A pub/sub whose PUBLISHes wait for the test, and what it delivered locally: each
    message with whether its caller's future was done by then."""
    pubsub = RedisPubSub(link)
    redis = HeldRedis()
    monkeypatch.setattr(pubsub, "_to_other_nodes", redis.publish_many)
    delivered: list[tuple[bytes, bool | None]] = []
    futures: dict[bytes, asyncio.Future[bool]] = {}

    def deliver(
        app_id: str, channel: str, message: bytes, exclude: str | None, position: Position | None
    ) -> None:
        future = futures.get(message)  # None: delivered within publish() itself
        delivered.append((message, future.done() if future is not None else None))

    pubsub.deliver = deliver
    original = pubsub.publish

    def publish(
        app_id: str, channel: str, message: bytes, exclude: str | None
    ) -> asyncio.Future[bool]:
        futures[message] = original(app_id, channel, message, exclude)
        return futures[message]

    monkeypatch.setattr(pubsub, "publish", publish)
    return pubsub, redis, delivered


async def test_written_locally_once_redis_answered_after_waking_the_callers(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    pubsub, redis, delivered = held_pubsub(link, monkeypatch)
    first = pubsub.publish("app", "c", b"one", None)
    second = pubsub.publish("app", "c", b"two", "1.2")
    await asyncio.sleep(0)  # the sender's pipeline is on its way
    assert redis.pipelines == [[("app", "c", b"one", None), ("app", "c", b"two", "1.2")]]
    assert delivered == []
    redis.answer.set()
    assert await first is True
    assert await second is True
    assert delivered == [(b"one", True), (b"two", True)]


async def test_a_failed_publish_is_still_written_locally(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    pubsub, redis, delivered = held_pubsub(link, monkeypatch)
    redis.failure = RedisConnectionError("gone")
    published = pubsub.publish("app", "c", b"one", None)
    redis.answer.set()
    assert await published is False  # the other nodes miss it; this node's sockets do not
    assert delivered == [(b"one", True)]
    assert link.degraded is True


async def test_degraded_meanwhile_a_publication_waits_behind_the_one_on_its_way(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    pubsub, redis, delivered = held_pubsub(link, monkeypatch)
    first = pubsub.publish("app", "c", b"one", None)
    await asyncio.sleep(0)
    link.failed(RedisConnectionError("the listener lost Redis"))
    second = pubsub.publish("app", "c", b"two", None)
    assert delivered == []  # not ahead of "one"
    redis.answer.set()
    assert await first is True
    assert await second is False
    assert [message for message, _ in delivered] == [b"one", b"two"]
    third = pubsub.publish("app", "c", b"three", None)  # nothing on its way: at once
    assert delivered[-1] == (b"three", None)
    assert await third is False
    assert len(redis.pipelines) == 1


async def test_a_local_delivery_that_raises_is_logged_and_the_others_still_go(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub, redis, delivered = held_pubsub(link, monkeypatch)
    deliver = pubsub.deliver
    assert deliver is not None

    def breaking(
        app_id: str, channel: str, message: bytes, exclude: str | None, position: Position | None
    ) -> None:
        if message == b"one":
            raise RuntimeError("a broken writer")
        deliver(app_id, channel, message, exclude, position)

    pubsub.deliver = breaking
    first = pubsub.publish("app", "c", b"one", None)
    second = pubsub.publish("app", "c", b"two", None)
    redis.answer.set()
    with caplog.at_level(logging.ERROR, "tidings.redis"):
        assert await first is True
        assert await second is True
    assert delivered == [(b"two", True)]  # once: the failure settled nothing twice
    assert "delivering a publication to c locally failed" in caplog.text
