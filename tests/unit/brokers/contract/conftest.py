"""Fixtures of the broker contract suite: started brokers of each implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker_contract import ALONE, IMPLEMENTATIONS, BrokerFactory


async def _factory(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    kind: str = request.param
    redis_url: str | None = None
    prefix = "memory"
    if kind in ("redis", "redis-sharded"):
        redis_url = request.getfixturevalue("redis_server").url
    if kind == "redis-cluster":
        redis_url = request.getfixturevalue("redis_cluster").url
    if kind != "memory":
        prefix = request.getfixturevalue("redis_prefix")
    factory = BrokerFactory(kind, redis_url, prefix)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture(params=IMPLEMENTATIONS)
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Started brokers of one implementation; every one is closed after the test."""
    async for factory in _factory(request):
        yield factory


@pytest.fixture(params=ALONE)
async def make_alone(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Started brokers that are alone: memory, or Redis brokers whose Redis is unreachable
    (degraded). Both answer from this node's own sockets."""
    async for factory in _factory(request):
        yield factory
