"""Every Lua script's keys, and a channel's topic, share one Redis Cluster slot.

A script whose keys span slots is refused on a Redis Cluster (CROSSSLOT), and
``history_publish.lua`` SPUBLISHes the channel's topic, which must hash with its keys.
"""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.crc import key_slot

from tidings.brokers.redis.cluster import ClusterRedis

CLUSTER = ClusterRedis(aioredis.Redis(), "tidings", sharded=True)  # never connects


def slots(*keys: str | bytes) -> set[int]:
    return {key_slot(key.encode() if isinstance(key, str) else key) for key in keys}


def test_a_channels_keys_and_topic_share_its_slot() -> None:
    key = CLUSTER.channel_key
    channel_state = [
        key("12345", "presence-room", "subs"),
        key("12345", "presence-room", "members"),
        key("12345", "presence-room", "msock", "user:with:colons"),
        key("12345", "presence-room", "cache"),
        key("12345", "presence-room", "h"),
        key("12345", "presence-room", "s"),
    ]
    assert len(slots(*channel_state, CLUSTER.topic("12345", "presence-room"))) == 1
    assert key("12345", "presence-room", "subs") == "tidings:{12345#presence-room}:subs"
    assert CLUSTER.topic_channel(CLUSTER.topic("12345", "a-b_c=d@e,f.g;h")) == (
        "12345",
        "a-b_c=d@e,f.g;h",
    )


def test_an_apps_keys_share_its_slot_and_a_nodes_indexes_theirs() -> None:
    app = CLUSTER.app_key
    assert len(slots(app("7", "channels"), app("7", "user", "u1"), app("7", "conns"))) == 1
    assert (
        len(slots(*(CLUSTER.node_key("n1", kind) for kind in ("subs", "presence", "users")))) == 1
    )
    # Channels of one app spread over slots: a hash tag per channel, not per app.
    assert len(slots(*(CLUSTER.channel_key("7", f"c{i}", "subs") for i in range(50)))) > 1
