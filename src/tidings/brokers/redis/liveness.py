"""Which nodes are alive, and what the cluster undoes when one is not.

Each node heartbeats; one that stops for ``node_ttl`` is reaped by a survivor, which
removes its sockets from presence, channel counts and signed-in users and announces what
that changed (``member_removed``, ``offline``, a recount). A node that finds itself reaped,
or that reconnects after an outage, resyncs: Redis is made to hold exactly its mirror.
Once every node had ``recovery_settle`` seconds to do the same, the node is told to re-read
what it shows (``on_recovered``): member events published while it could not hear them
are gone, Redis pub/sub keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from tidings.brokers.base import Reaped, Recovered
from tidings.brokers.control import MemberAdded, MemberRemoved, Recount, UserOffline, UserOnline
from tidings.brokers.redis.cluster import FAILURES, text
from tidings.brokers.redis.control_bus import RedisControlBus
from tidings.brokers.redis.link import RedisLink
from tidings.brokers.redis.listener import RECONNECT_BACKOFF_MAX
from tidings.brokers.redis.mirror import Mirror
from tidings.brokers.redis.scripts import SEP, UNLIMITED, Scripts, presence_entry
from tidings.protocol import messages
from tidings.tasks import spawn

log = logging.getLogger("tidings.redis")

# After Redis returns, how long every node gets to reconnect (backoff up to 2 s) and write
# its sockets back before this node re-reads the presence rosters its sockets were shown.
RECOVERY_SETTLE = RECONNECT_BACKOFF_MAX + 1.0
RESYNC_PASSES = 10  # resyncs repeated while sockets keep changing, at most
# Scripts a resync keeps in flight at once: one round trip per socket, one after the other,
# took longer than node_ttl for a worker holding ~17k sockets (bench/hold.py at 100k), and
# the other nodes reaped it while it wrote itself back.
RESYNC_CONCURRENCY = 64


class Liveness:
    def __init__(
        self,
        link: RedisLink,
        scripts: Scripts,
        mirror: Mirror,
        control: RedisControlBus,
        node_ttl: float,
        recovery_settle: float,
    ) -> None:
        self._link = link
        self._scripts = scripts
        self._mirror = mirror
        self._control = control
        self._node_ttl = node_ttl
        self._recovery_settle = recovery_settle
        self._lock = asyncio.Lock()
        self._last_heartbeat = 0.0  # time.monotonic() of the last one a resync sent
        self._heartbeats: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self.reaped: Reaped | None = None
        self.recovered: Recovered | None = None

    def start(self) -> None:
        self._heartbeats = spawn(self._heartbeat_forever(), "redis heartbeat")

    async def close(self) -> None:
        tasks = [t for t in (self._heartbeats, self._recovery) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def leave(self) -> None:
        """A clean stop: remove what is left of this node now rather than after node_ttl."""
        await self.reap(self._link.node_id, "stopped")

    # -- heartbeats and reaping --------------------------------------------------------------

    @property
    def _interval(self) -> float:
        return max(0.2, self._node_ttl / 3)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._link.degraded:
                continue  # the listener reconnects and resyncs
            try:
                await self._heartbeat()
            except FAILURES as exc:
                self._link.failed(exc)
            except Exception as exc:  # never let liveness stop: the cluster would reap us
                log.exception("redis heartbeat failed")
                self._link.failed(exc)

    async def _heartbeat(self) -> None:
        missing, dead = await self._scripts.heartbeat(self._node_ttl)
        if missing:
            # Another node reaped us (we were silent too long): write our state back.
            log.warning(
                "node %s was declared dead by the cluster; re-announcing", self._link.node_id
            )
            await self.resync()
            self._schedule_recovered()  # the reap told every node our members left
        for node_id in dead:
            if node_id != self._link.node_id:
                await self.reap(node_id, "stopped heartbeating")

    async def reap(self, node_id: str, why: str) -> None:
        leftovers = await self._scripts.reap_node(node_id)
        removed, offline = leftovers.removed, leftovers.offline
        if removed or offline:
            log.warning(
                "node %s %s: removed %d presence member(s), %d user(s)",
                node_id,
                why,
                len(removed),
                len(offline),
            )
        # A node stopping cleanly tells the others only: its own sockets are already gone.
        itself = node_id == self._link.node_id
        announce = self._control.publish_remote if itself else self._control.everywhere
        for app_id, channel, user_id in removed:
            await announce(app_id, MemberRemoved(channel, user_id))
        for app_id, user_id in offline:
            await announce(app_id, UserOffline(user_id))
        for app_id, channel in leftovers.recount:
            await announce(app_id, Recount(channel))
        if self.reaped is not None and not itself:
            for app_id, channel, user_id in removed:
                self.reaped(app_id, "member_removed", channel, user_id)
            for app_id, channel in leftovers.vacated:
                self.reaped(app_id, "channel_vacated", channel, "")

    # -- resync after an outage --------------------------------------------------------------

    async def resync(self) -> None:
        """Make Redis hold exactly this node's mirror (after an outage or being reaped).

        Entries Redis has that the mirror lacks are removed through the leave scripts (so a
        user who left during the outage gets member_removed); entries the mirror has are
        added through the join scripts (idempotent; a user who joined during the outage gets
        member_added). Then the node is marked healthy.
        """
        async with self._lock:
            # Sockets come and go while this runs (the mirror is updated in degraded mode);
            # repeat until a pass saw no change, so nothing is left out of Redis.
            for _ in range(RESYNC_PASSES):
                version = self._mirror.version
                await self._resync_once()
                if version == self._mirror.version:
                    break
            if self._link.healthy():
                self._schedule_recovered()

    def _schedule_recovered(self) -> None:
        """Call the recovered handler once every node had ``recovery_settle`` seconds to
        write its state back (a later recovery starts the wait again)."""
        if self._recovery is not None:
            self._recovery.cancel()
        self._recovery = spawn(self._announce_recovered(), "redis recovered")

    async def _announce_recovered(self) -> None:
        await asyncio.sleep(self._recovery_settle)
        if self.recovered is not None and not self._link.degraded:
            await self.recovered()

    async def _held(self, kind: str) -> set[str]:
        index = self._link.cluster.node_key(self._link.node_id, kind)
        return {text(e) for e in await self._link.redis.smembers(index)}

    async def _each(self, entries: Iterable[str], step: Callable[[str], Awaitable[None]]) -> None:
        """``step`` for every entry, RESYNC_CONCURRENCY at a time, heartbeating between
        rounds: a long resync must not get this node reaped (the heartbeat task waits while
        the link is degraded). Each step is one atomic script, so their order is free."""
        iterator = iter(entries)
        while chunk := list(itertools.islice(iterator, RESYNC_CONCURRENCY)):
            results = await asyncio.gather(*(step(e) for e in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result  # every step of the round has finished: nothing left behind
            if time.monotonic() - self._last_heartbeat >= self._interval:
                await self._beat()

    async def _beat(self) -> None:
        await self._scripts.heartbeat(self._node_ttl)
        self._last_heartbeat = time.monotonic()

    async def _resync_once(self) -> None:
        scripts, control, mirror = self._scripts, self._control, self._mirror
        await self._beat()
        held_subs = await self._held("subs")
        held_presence = await self._held("presence")
        held_users = await self._held("users")
        want_subs = mirror.sub_entries()
        want_users = mirror.user_entries()

        async def unsubscribe(entry: str) -> None:
            app, ch, s = entry.split(SEP, 2)
            await scripts.unsubscribe(app, ch, s)

        async def leave(entry: str) -> None:
            app, ch, s, user = entry.split(SEP, 3)
            if await scripts.presence_leave(app, ch, s, user):
                await control.everywhere(app, MemberRemoved(ch, user))

        async def offline(entry: str) -> None:
            app, s, user = entry.split(SEP, 2)
            if await scripts.user_offline(app, user, s):
                await control.everywhere(app, UserOffline(user))

        async def subscribe(entry: str) -> None:
            app, ch, s = entry.split(SEP, 2)
            await scripts.subscribe(app, ch, s)

        joins = {
            presence_entry(app, ch, s, m.user_id): (app, ch, s, m)
            for (app, ch), members in list(mirror.presence.items())
            for s, m in list(members.items())
        }

        async def join(entry: str) -> None:
            app, ch, s, m = joins[entry]
            _, first, _ = await scripts.presence_join(app, ch, s, m, UNLIMITED)
            if first:
                # Local sockets learnt of this member while Redis was away; others not.
                info = messages.dumps(m.user_info)
                await control.publish_remote(app, MemberAdded(ch, m.user_id, info))

        async def online(entry: str) -> None:
            app, s, user = entry.split(SEP, 2)
            if await scripts.user_online(app, user, s):
                await control.publish_remote(app, UserOnline(user))

        await self._each(held_subs - want_subs, unsubscribe)
        await self._each(held_presence - mirror.presence_entries(), leave)
        await self._each(held_users - want_users, offline)
        await self._each(want_subs - held_subs, subscribe)
        await self._each([e for e in joins if e not in held_presence], join)
        await self._each(want_users - held_users, online)
