"""The Lua state scripts (``brokers/lua/``), with the keys and arguments each one takes.

Every multi-key change of shared state is one script, so it is atomic. Each script also
records the change in the node's index (``{prefix}:node:{id}:…``, entries joined by
:data:`SEP`) so that the cluster can undo it if the node dies (``reap_node.lua``).
Methods raise what redis-py raises: the caller decides what an outage means.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import orjson

from tidings.brokers.latency import RoundTrips
from tidings.brokers.redis.cluster import ClusterRedis
from tidings.protocol import messages
from tidings.protocol.session import Member

SEP = "\x1f"  # separates the parts of a node index entry (not a channel-name character)
UNLIMITED = 2**31  # max_members when writing back a member that is already in the channel

_NAMES = (
    "subscribe",
    "unsubscribe",
    "presence_join",
    "presence_leave",
    "user_online",
    "user_offline",
    "heartbeat",
    "reap_node",
)


def _load(name: str) -> str:
    return resources.files("tidings.brokers").joinpath(f"lua/{name}.lua").read_text()


def decode_members(flat: list[bytes]) -> list[Member]:
    return [Member(flat[i].decode(), orjson.loads(flat[i + 1])) for i in range(0, len(flat), 2)]


def sub_entry(app_id: str, channel: str, socket_id: str) -> str:
    return SEP.join((app_id, channel, socket_id))


def presence_entry(app_id: str, channel: str, socket_id: str, user_id: str) -> str:
    return SEP.join((app_id, channel, socket_id, user_id))


def user_entry(app_id: str, socket_id: str, user_id: str) -> str:
    return SEP.join((app_id, socket_id, user_id))


class Scripts:
    """This node's calls of the state scripts. Round trips are timed (never publishes)."""

    def __init__(self, cluster: ClusterRedis, node_id: str, round_trips: RoundTrips) -> None:
        self._cluster = cluster
        self._node_id = node_id
        self._round_trips = round_trips
        self._scripts = {name: cluster.redis.register_script(_load(name)) for name in _NAMES}

    async def _run(self, name: str, keys: list[str], args: list[str]) -> Any:
        started = time.perf_counter()
        result = await self._scripts[name](keys=keys, args=args)
        self._round_trips.observe(time.perf_counter() - started)
        return result

    def _member(self, socket_id: str) -> str:
        return f"{self._node_id}/{socket_id}"

    def _index(self, kind: str) -> str:
        return self._cluster.node_key(self._node_id, kind)

    # -- subscriptions -----------------------------------------------------------------------

    def _sub_call(self, app_id: str, channel: str, socket_id: str) -> tuple[list[str], list[str]]:
        key = self._cluster.key
        keys = [key(app_id, "subs", channel), key(app_id, "channels"), self._index("subs")]
        args = [self._member(socket_id), channel, sub_entry(app_id, channel, socket_id)]
        return keys, args

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Add the socket; the channel's subscription count after it."""
        return int(await self._run("subscribe", *self._sub_call(app_id, channel, socket_id)))

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        return int(await self._run("unsubscribe", *self._sub_call(app_id, channel, socket_id)))

    # -- presence ----------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str, user_id: str) -> list[str]:
        key = self._cluster.key
        members, sockets = key(app_id, "members", channel), key(app_id, "msock", channel, user_id)
        return [members, sockets, self._index("presence")]

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> tuple[bool, bool, list[Member]]:
        """``(accepted, first, roster after)``."""
        args = [
            member.user_id,
            messages.dumps(member.user_info),
            self._member(socket_id),
            str(max_members),
            presence_entry(app_id, channel, socket_id, member.user_id),
        ]
        keys = self._presence_keys(app_id, channel, member.user_id)
        accepted, first, flat = await self._run("presence_join", keys, args)
        return bool(accepted), bool(first), decode_members(flat)

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        """Remove the socket; True when it was the user's last in the channel."""
        entry = presence_entry(app_id, channel, socket_id, user_id)
        args = [user_id, self._member(socket_id), entry]
        return bool(
            await self._run("presence_leave", self._presence_keys(app_id, channel, user_id), args)
        )

    # -- signed-in users ---------------------------------------------------------------------

    def _user_call(self, app_id: str, user_id: str, socket_id: str) -> tuple[list[str], list[str]]:
        keys = [self._cluster.key(app_id, "user", user_id), self._index("users")]
        return keys, [self._member(socket_id), user_entry(app_id, socket_id, user_id)]

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Add the socket; True when it is the user's first anywhere."""
        return bool(await self._run("user_online", *self._user_call(app_id, user_id, socket_id)))

    async def user_offline(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Remove the socket; True when it was the user's last anywhere."""
        return bool(await self._run("user_offline", *self._user_call(app_id, user_id, socket_id)))

    # -- liveness ----------------------------------------------------------------------------

    async def heartbeat(self, node_ttl: float) -> tuple[bool, list[str]]:
        """Renew this node's deadline: ``(this node was missing, ids of dead nodes)``."""
        missing, dead = await self._run(
            "heartbeat", [self._cluster.nodes_key], [self._node_id, str(int(node_ttl * 1000))]
        )
        return bool(missing), [raw.decode() for raw in dead]

    async def reap_node(self, node_id: str) -> Any:
        """Remove what ``node_id`` added: ``(removed members, offline users, channels to
        recount, vacated channels)``, each a list of byte-string tuples."""
        node_key = self._cluster.node_key
        keys = [
            self._cluster.nodes_key,
            node_key(node_id, "subs"),
            node_key(node_id, "presence"),
            node_key(node_id, "users"),
        ]
        return await self._run("reap_node", keys, [node_id, self._cluster.prefix])
