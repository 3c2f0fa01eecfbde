"""The Lua state scripts (``brokers/lua/``), with the keys and arguments each one takes.

Each script changes one channel's (or one app's) shared state atomically, and touches one
Redis Cluster slot. The node's index of what it added (``{prefix}:node:{id}:…``, entries
joined by :data:`SEP`) lives in the node's own slot, so it is written in the same pipeline
as the script (one round trip on one Redis): before a script that adds, after one that
removes. A node that dies between the two leaves an index entry for a socket Redis does not
hold, which the reaper removes harmlessly, never a socket the reaper cannot find.
Methods raise what redis-py raises: the caller decides what an outage means.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from tidings.brokers.latency import RoundTrips
from tidings.brokers.redis.cluster import ClusterRedis, text
from tidings.protocol import messages
from tidings.protocol.session import Member

SEP = "\x1f"  # separates the parts of a node index entry (not a channel-name character)
UNLIMITED = 2**31  # max_members when writing back a member that is already in the channel
REAP_BATCH = 64  # index entries of a dead node undone concurrently

_NAMES = (
    "subscribe",
    "unsubscribe",
    "presence_join",
    "presence_leave",
    "user_online",
    "user_offline",
    "heartbeat",
)

Command = Callable[[Any], object]
"""Queues one command on a pipeline (``lambda p: p.sadd(key, member)``)."""


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


@dataclass(slots=True)
class Leftovers:
    """What reaping a dead node changed, for the announcements (``liveness.py``)."""

    removed: list[tuple[str, str, str]] = field(default_factory=list)  # app, channel, user
    offline: list[tuple[str, str]] = field(default_factory=list)  # app, user
    recount: list[tuple[str, str]] = field(default_factory=list)  # app, channel
    vacated: list[tuple[str, str]] = field(default_factory=list)  # app, channel


class Scripts:
    """This node's calls of the state scripts. Round trips are timed (never publishes)."""

    def __init__(self, cluster: ClusterRedis, node_id: str, round_trips: RoundTrips) -> None:
        self._cluster = cluster
        self._node_id = node_id
        self._round_trips = round_trips
        self._texts = {name: _load(name) for name in _NAMES}
        self._shas = {n: hashlib.sha1(t.encode()).hexdigest() for n, t in self._texts.items()}

    async def _run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str],
        before: Sequence[Command] = (),
        after: Sequence[Command] = (),
    ) -> Any:
        """Script ``name``'s result, with ``before`` and ``after`` in the same pipeline.

        Every command around a script is idempotent (SADD, SREM), so a pipeline refused
        for a script Redis does not have (a restarted Redis) is run again once loaded."""
        started = time.perf_counter()
        try:
            result = await self._pipeline(name, keys, args, before, after)
        except NoScriptError:
            for script in self._texts.values():
                await self._cluster.redis.script_load(script)
            result = await self._pipeline(name, keys, args, before, after)
        self._round_trips.observe(time.perf_counter() - started)
        return result

    async def _pipeline(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str],
        before: Sequence[Command],
        after: Sequence[Command],
    ) -> Any:
        async with self._cluster.redis.pipeline(transaction=False) as pipe:
            for command in before:
                command(pipe)
            pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            for command in after:
                command(pipe)
            results = await pipe.execute()
        return results[len(before)]

    def _member(self, socket_id: str, node_id: str | None = None) -> str:
        return f"{node_id or self._node_id}/{socket_id}"

    def _index(self, kind: str, node_id: str | None = None) -> str:
        return self._cluster.node_key(node_id or self._node_id, kind)

    async def _vacate(self, app_id: str, channel: str) -> bool:
        """Take an emptied channel off the app's occupied set; True if this call did.

        Two slots, so not atomic: a subscriber that arrives meanwhile SADDs the channel
        after its own subscription, and the check after the SREM sees that subscription
        and puts the channel back. Either way the set ends up listing an occupied channel."""
        redis, occupied = self._cluster.redis, self._cluster.app_key(app_id, "channels")
        removed = await redis.srem(occupied, channel)
        if await redis.exists(self._cluster.channel_key(app_id, channel, "subs")):
            await redis.sadd(occupied, channel)
            return False
        return bool(removed)

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> int:
        """Add the socket; the channel's subscription count after it."""
        index, entry = self._index("subs"), sub_entry(app_id, channel, socket_id)
        occupied = self._cluster.app_key(app_id, "channels")
        count = await self._run(
            "subscribe",
            [self._cluster.channel_key(app_id, channel, "subs")],
            [self._member(socket_id)],
            before=[lambda p: p.sadd(index, entry)],
            after=[lambda p: p.sadd(occupied, channel)],
        )
        return int(count)

    async def unsubscribe(
        self, app_id: str, channel: str, socket_id: str, node_id: str | None = None
    ) -> int:
        """Remove the socket (of ``node_id``, this node by default); the count after it."""
        return (await self._unsubscribe(app_id, channel, socket_id, node_id))[1]

    async def _unsubscribe(
        self, app_id: str, channel: str, socket_id: str, node_id: str | None
    ) -> tuple[bool, int, bool]:
        """``(the socket was a subscriber, count after, this call vacated the channel)``."""
        index, entry = self._index("subs", node_id), sub_entry(app_id, channel, socket_id)
        removed, count = await self._run(
            "unsubscribe",
            [self._cluster.channel_key(app_id, channel, "subs")],
            [self._member(socket_id, node_id)],
            after=[lambda p: p.srem(index, entry)],
        )
        vacated = int(count) == 0 and await self._vacate(app_id, channel)
        return bool(removed), int(count), vacated

    # -- presence ----------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str, user_id: str) -> list[str]:
        key = self._cluster.channel_key
        return [key(app_id, channel, "members"), key(app_id, channel, "msock", user_id)]

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> tuple[bool, bool, list[Member]]:
        """``(accepted, first, roster after)``."""
        args = [
            member.user_id,
            messages.dumps(member.user_info),
            self._member(socket_id),
            str(max_members),
        ]
        index = self._index("presence")
        entry = presence_entry(app_id, channel, socket_id, member.user_id)
        accepted, first, flat = await self._run(
            "presence_join",
            self._presence_keys(app_id, channel, member.user_id),
            args,
            before=[lambda p: p.sadd(index, entry)],
        )
        if not accepted:
            await self._cluster.redis.srem(index, entry)
        return bool(accepted), bool(first), decode_members(flat)

    async def presence_leave(
        self, app_id: str, channel: str, socket_id: str, user_id: str, node_id: str | None = None
    ) -> bool:
        """Remove the socket; True when it was the user's last in the channel."""
        index = self._index("presence", node_id)
        entry = presence_entry(app_id, channel, socket_id, user_id)
        last = await self._run(
            "presence_leave",
            self._presence_keys(app_id, channel, user_id),
            [user_id, self._member(socket_id, node_id)],
            after=[lambda p: p.srem(index, entry)],
        )
        return bool(last)

    # -- signed-in users ---------------------------------------------------------------------

    async def user_online(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Add the socket; True when it is the user's first anywhere."""
        index, entry = self._index("users"), user_entry(app_id, socket_id, user_id)
        first = await self._run(
            "user_online",
            [self._cluster.app_key(app_id, "user", user_id)],
            [self._member(socket_id)],
            before=[lambda p: p.sadd(index, entry)],
        )
        return bool(first)

    async def user_offline(
        self, app_id: str, user_id: str, socket_id: str, node_id: str | None = None
    ) -> bool:
        """Remove the socket; True when it was the user's last anywhere."""
        index, entry = self._index("users", node_id), user_entry(app_id, socket_id, user_id)
        last = await self._run(
            "user_offline",
            [self._cluster.app_key(app_id, "user", user_id)],
            [self._member(socket_id, node_id)],
            after=[lambda p: p.srem(index, entry)],
        )
        return bool(last)

    # -- liveness ----------------------------------------------------------------------------

    async def heartbeat(self, node_ttl: float) -> tuple[bool, list[str]]:
        """Renew this node's deadline: ``(this node was missing, ids of dead nodes)``."""
        missing, dead = await self._run(
            "heartbeat", [self._cluster.nodes_key], [self._node_id, str(int(node_ttl * 1000))]
        )
        return bool(missing), [raw.decode() for raw in dead]

    async def reap_node(self, node_id: str) -> Leftovers:
        """Remove what ``node_id`` added, one index entry at a time (each in its own slot).

        Exactly one survivor reaps a node: the one whose ZREM of it succeeds. A reaper that
        dies half-way leaves the rest (Redis Cluster cannot undo several slots at once):
        those sockets stay counted until their channel's keys expire or are rewritten."""
        redis, leftovers = self._cluster.redis, Leftovers()
        if not await redis.zrem(self._cluster.nodes_key, node_id):
            return leftovers
        indexes = [self._index(kind, node_id) for kind in ("subs", "presence", "users")]
        held = [[text(e) for e in await redis.smembers(index)] for index in indexes]
        subs, presence, users = held

        async def unsubscribe(entry: str) -> None:
            app, channel, socket_id = entry.split(SEP, 2)
            removed, _, vacated = await self._unsubscribe(app, channel, socket_id, node_id)
            if removed and (app, channel) not in leftovers.recount:
                leftovers.recount.append((app, channel))
            if vacated:
                leftovers.vacated.append((app, channel))

        async def leave(entry: str) -> None:
            app, channel, socket_id, user = entry.split(SEP, 3)
            if await self.presence_leave(app, channel, socket_id, user, node_id):
                leftovers.removed.append((app, channel, user))

        async def offline(entry: str) -> None:
            app, socket_id, user = entry.split(SEP, 2)
            if await self.user_offline(app, user, socket_id, node_id):
                leftovers.offline.append((app, user))

        for undo, entries in ((unsubscribe, subs), (leave, presence), (offline, users)):
            for start in range(0, len(entries), REAP_BATCH):
                await asyncio.gather(*(undo(e) for e in entries[start : start + REAP_BATCH]))
        await redis.delete(*indexes)
        return leftovers
