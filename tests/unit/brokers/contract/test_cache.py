"""broker.cache (Cache, channel state): the last event of a cache channel, shared by every
node until it expires."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker_contract import (
    APP,
    OTHER_APP,
    TIMEOUT,
    BrokerFactory,
    cluster,
)
from tidings.brokers.base import CachedEvent


async def test_cache_set_get_and_overwrite(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    now = time.monotonic()
    assert await broker.cache.get(APP, "cache-c", now) is None
    first = CachedEvent(b'{"event":"e","data":"1"}', now + 20 * TIMEOUT)
    await broker.cache.set(APP, "cache-c", first, now)
    got = await broker.cache.get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == first.message
    assert got.expires_at == pytest.approx(first.expires_at, abs=TIMEOUT)
    assert await broker.cache.get(OTHER_APP, "cache-c", now) is None
    assert await broker.cache.get(APP, "cache-d", now) is None
    newer = CachedEvent(b'{"event":"e","data":"2"}', now + 40 * TIMEOUT)
    await broker.cache.set(APP, "cache-c", newer, time.monotonic())
    got = await broker.cache.get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == newer.message
    assert got.expires_at == pytest.approx(newer.expires_at, abs=TIMEOUT)


async def test_cache_expires(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    now = time.monotonic()
    ttl = 0.2
    await broker.cache.set(APP, "cache-c", CachedEvent(b"short", now + ttl), now)
    await broker.cache.set(APP, "cache-d", CachedEvent(b"long", now + 20 * TIMEOUT), now)
    # A deterministic wait: expiry is a matter of elapsed time, not of an event to poll for.
    await asyncio.sleep(ttl + 0.1)
    later = time.monotonic()
    assert later >= now + ttl
    assert await broker.cache.get(APP, "cache-c", later) is None
    assert await broker.cache.get(APP, "cache-c", later) is None  # and stays gone
    kept = await broker.cache.get(APP, "cache-d", later)
    assert kept is not None and kept.message == b"long"
    # Setting it again after expiry works like a first set.
    await broker.cache.set(APP, "cache-c", CachedEvent(b"again", later + 20 * TIMEOUT), later)
    again = await broker.cache.get(APP, "cache-c", time.monotonic())
    assert again is not None and again.message == b"again"


@cluster
async def test_cached_event_reaches_other_node(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    now = time.monotonic()
    event = CachedEvent(b'{"event":"e"}', now + 20 * TIMEOUT)
    await a.cache.set(APP, "cache-c", event, now)
    got = await b.cache.get(APP, "cache-c", time.monotonic())
    assert got is not None and got.message == event.message
    assert got.expires_at == pytest.approx(event.expires_at, abs=TIMEOUT)
