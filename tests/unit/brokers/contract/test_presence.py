"""broker.presence (Presence): members and signed-in users are cluster-wide; exactly one
join says "first" and one leave says "last" per user; max_members refuses new users only,
atomically even under concurrent joins; user_info round-trips as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker_contract import (
    APP,
    OTHER_APP,
    BrokerFactory,
    by_user,
    cluster,
)
from tidings.protocol.session import Member


async def test_presence_join_first_members_accepted(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann = Member("ann", {"name": "Ann"})
    bob = Member("bob", None)
    joined = await broker.presence.join(APP, "presence-p", "1.1", ann, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [ann])
    joined = await broker.presence.join(APP, "presence-p", "1.2", ann, 10)  # second socket
    assert (joined.accepted, joined.first, joined.members) == (True, False, [ann])
    joined = await broker.presence.join(APP, "presence-p", "1.2", ann, 10)  # same socket again
    assert (joined.accepted, joined.first) == (True, False)
    joined = await broker.presence.join(APP, "presence-p", "2.1", bob, 10)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [ann, bob]
    assert by_user(await broker.presence.members(APP, "presence-p")) == [ann, bob]
    assert await broker.presence.members(APP, "presence-q") == []
    assert await broker.presence.members(OTHER_APP, "presence-p") == []


async def test_presence_leave_last_only_on_last_socket(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann, bob = Member("ann"), Member("bob")
    await broker.presence.join(APP, "presence-p", "1.1", ann, 10)
    await broker.presence.join(APP, "presence-p", "1.2", ann, 10)
    await broker.presence.join(APP, "presence-p", "2.1", bob, 10)
    assert await broker.presence.leave(APP, "presence-p", "9.9", "ann") is False  # unknown socket
    assert await broker.presence.leave(APP, "presence-p", "1.1", "ann") is False
    assert by_user(await broker.presence.members(APP, "presence-p")) == [ann, bob]
    assert await broker.presence.leave(APP, "presence-p", "1.2", "ann") is True
    assert await broker.presence.leave(APP, "presence-p", "1.2", "ann") is False  # already gone
    assert await broker.presence.members(APP, "presence-p") == [bob]
    assert await broker.presence.leave(APP, "presence-p", "2.1", "bob") is True
    assert await broker.presence.members(APP, "presence-p") == []
    assert await broker.presence.leave(APP, "presence-never", "1.1", "ann") is False
    # The user is new again after leaving.
    joined = await broker.presence.join(APP, "presence-p", "1.3", ann, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [ann])


async def test_presence_max_members_refuses_new_users_only(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    ann, bob, cat = Member("ann"), Member("bob"), Member("cat")
    await broker.presence.join(APP, "presence-p", "1.1", ann, 2)
    await broker.presence.join(APP, "presence-p", "2.1", bob, 2)
    refused = await broker.presence.join(APP, "presence-p", "3.1", cat, 2)
    assert (refused.accepted, refused.first) == (False, False)
    assert by_user(refused.members) == [ann, bob]
    assert by_user(await broker.presence.members(APP, "presence-p")) == [ann, bob]
    # Another socket of a member is not a new member.
    again = await broker.presence.join(APP, "presence-p", "1.2", ann, 2)
    assert (again.accepted, again.first) == (True, False)
    # The refused socket was never added: leaving with it is not a "last".
    assert await broker.presence.leave(APP, "presence-p", "3.1", "cat") is False
    assert await broker.presence.leave(APP, "presence-p", "2.1", "bob") is True
    joined = await broker.presence.join(APP, "presence-p", "3.1", cat, 2)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [ann, cat]


async def test_presence_refused_join_on_empty_channel_leaves_nothing(
    make_broker: BrokerFactory,
) -> None:
    broker = (await make_broker()).broker
    refused = await broker.presence.join(APP, "presence-p", "1.1", Member("ann"), 0)
    assert (refused.accepted, refused.first, refused.members) == (False, False, [])
    assert await broker.presence.members(APP, "presence-p") == []
    assert await broker.presence.leave(APP, "presence-p", "1.1", "ann") is False


@pytest.mark.parametrize(
    "user_info",
    [
        None,
        "plain string",
        42,
        1.5,
        True,
        ["a", 1, None, {"b": [2]}],
        {"name": "Zoë 🚀", "tags": ["a", 1], "nested": {"x": None, "y": False}, "n": -1.25},
        {},
    ],
)
async def test_presence_user_info_round_trips_as_json(
    make_broker: BrokerFactory, user_info: Any
) -> None:
    broker = (await make_broker()).broker
    member = Member("u1", user_info)
    joined = await broker.presence.join(APP, "presence-p", "1.1", member, 10)
    assert joined.members == [member]
    (got,) = await broker.presence.members(APP, "presence-p")
    assert got.user_id == "u1"
    assert json.dumps(got.user_info, sort_keys=True) == json.dumps(user_info, sort_keys=True)
    assert type(got.user_info) is type(user_info)


async def test_users_online_offline(make_broker: BrokerFactory) -> None:
    broker = (await make_broker()).broker
    assert await broker.presence.users_online(APP, ["u1", "u2"]) == []
    assert await broker.presence.user_online(APP, "u1", "1.1") is True
    assert await broker.presence.user_online(APP, "u1", "1.2") is False
    assert await broker.presence.user_online(APP, "u2", "2.1") is True
    assert sorted(await broker.presence.users_online(APP, ["u1", "u2", "u3"])) == ["u1", "u2"]
    assert await broker.presence.users_online(OTHER_APP, ["u1"]) == []
    assert await broker.presence.users_online(APP, []) == []
    assert await broker.presence.user_offline(APP, "u1", "1.1") is False
    assert await broker.presence.user_offline(APP, "u1", "9.9") is False  # unknown socket
    assert await broker.presence.users_online(APP, ["u1"]) == ["u1"]
    assert await broker.presence.user_offline(APP, "u1", "1.2") is True
    assert await broker.presence.user_offline(APP, "u1", "1.2") is False  # already offline
    assert await broker.presence.users_online(APP, ["u1", "u2"]) == ["u2"]
    assert await broker.presence.user_online(APP, "u1", "1.3") is True  # first again


@cluster
async def test_presence_first_and_last_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    u1 = Member("u1", {"name": "Ann"})
    joined = await a.presence.join(APP, "presence-p", "1.1", u1, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, True, [u1])
    joined = await b.presence.join(APP, "presence-p", "2.1", u1, 10)
    assert (joined.accepted, joined.first, joined.members) == (True, False, [u1])
    u2 = Member("u2", ["x"])
    joined = await b.presence.join(APP, "presence-p", "2.2", u2, 10)
    assert (joined.accepted, joined.first) == (True, True)
    assert by_user(joined.members) == [u1, u2]
    assert by_user(await a.presence.members(APP, "presence-p")) == [u1, u2]
    assert await a.presence.leave(APP, "presence-p", "1.1", "u1") is False  # B still has s2
    assert by_user(await b.presence.members(APP, "presence-p")) == [u1, u2]
    assert await b.presence.leave(APP, "presence-p", "2.1", "u1") is True
    assert await a.presence.members(APP, "presence-p") == [u2]
    assert await b.presence.leave(APP, "presence-p", "2.2", "u2") is True
    assert await a.presence.members(APP, "presence-p") == []


@cluster
async def test_presence_max_members_is_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    u1, u2 = Member("u1"), Member("u2")
    assert (await a.presence.join(APP, "presence-p", "1.1", u1, 1)).accepted is True
    refused = await b.presence.join(APP, "presence-p", "2.1", u2, 1)
    assert (refused.accepted, refused.first, refused.members) == (False, False, [u1])
    again = await b.presence.join(APP, "presence-p", "2.2", u1, 1)  # u1 is already a member
    assert (again.accepted, again.first, again.members) == (True, False, [u1])
    assert await a.presence.members(APP, "presence-p") == [u1]


@cluster
async def test_concurrent_presence_joins_respect_max_members(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).presence.join(APP, "presence-p", f"{i}.1", Member(f"u{i}"), 5)
            for i in range(20)
        )
    )
    accepted = [r for r in results if r.accepted]
    assert len(accepted) == 5
    assert all(r.first for r in accepted)
    assert len(await a.presence.members(APP, "presence-p")) == 5


@cluster
async def test_users_online_are_cluster_wide(make_broker: BrokerFactory) -> None:
    a, b = (await make_broker("a")).broker, (await make_broker("b")).broker
    assert await a.presence.user_online(APP, "u1", "1.1") is True
    assert await b.presence.user_online(APP, "u1", "2.1") is False
    assert await b.presence.users_online(APP, ["u1", "u2"]) == ["u1"]
    assert await a.presence.user_offline(APP, "u1", "1.1") is False
    assert await a.presence.users_online(APP, ["u1"]) == ["u1"]
    assert await b.presence.user_offline(APP, "u1", "2.1") is True
    assert await a.presence.users_online(APP, ["u1"]) == []
