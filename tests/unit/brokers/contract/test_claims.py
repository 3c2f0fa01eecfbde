"""broker.claims (Claims): a key belongs to the first live node that claims it, until its
claim lapses unrenewed; then another node may take it."""

from __future__ import annotations

import asyncio

from broker_contract import BrokerFactory, cluster

TTL = 0.3  # seconds: claims lapse in the tests below


async def test_a_lone_node_owns_what_it_claims(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.claims.claim("session-1", 10.0) == broker.node_id
    assert await broker.claims.claim("session-1", 10.0) == broker.node_id
    await broker.claims.refresh(["session-1", "session-2"], 10.0)
    await broker.claims.refresh([], 10.0)


@cluster
async def test_the_first_claim_wins_until_it_lapses(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.claims.claim("session-1", TTL) == a.node_id
    assert await b.claims.claim("session-1", TTL) == a.node_id
    assert await b.claims.claim("session-2", TTL) == b.node_id
    # A deterministic wait: a lapse is a matter of elapsed time, not of an event to poll for.
    await asyncio.sleep(TTL + 0.2)
    assert await b.claims.claim("session-1", 10.0) == b.node_id
    assert await a.claims.claim("session-1", 10.0) == b.node_id


@cluster
async def test_a_refreshed_claim_outlives_its_first_ttl(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.claims.claim("session-1", TTL) == a.node_id
    await a.claims.refresh(["session-1"], 10.0)
    await asyncio.sleep(TTL + 0.2)
    assert await b.claims.claim("session-1", TTL) == a.node_id
