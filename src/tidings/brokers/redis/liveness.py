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
import logging

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

    async def _heartbeat_forever(self) -> None:
        interval = max(0.2, self._node_ttl / 3)
        while True:
            await asyncio.sleep(interval)
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

    async def _resync_once(self) -> None:
        scripts, control, mirror = self._scripts, self._control, self._mirror
        await scripts.heartbeat(self._node_ttl)
        held_subs = await self._held("subs")
        held_presence = await self._held("presence")
        held_users = await self._held("users")
        want_subs = mirror.sub_entries()
        want_users = mirror.user_entries()
        for entry in held_subs - want_subs:
            app, ch, s = entry.split(SEP, 2)
            await scripts.unsubscribe(app, ch, s)
        for entry in held_presence - mirror.presence_entries():
            app, ch, s, user = entry.split(SEP, 3)
            if await scripts.presence_leave(app, ch, s, user):
                await control.everywhere(app, MemberRemoved(ch, user))
        for entry in held_users - want_users:
            app, s, user = entry.split(SEP, 2)
            if await scripts.user_offline(app, user, s):
                await control.everywhere(app, UserOffline(user))
        for entry in want_subs - held_subs:
            app, ch, s = entry.split(SEP, 2)
            await scripts.subscribe(app, ch, s)
        for (app, ch), members in list(mirror.presence.items()):
            for s, m in list(members.items()):
                if presence_entry(app, ch, s, m.user_id) in held_presence:
                    continue
                _, first, _ = await scripts.presence_join(app, ch, s, m, UNLIMITED)
                if first:
                    # Local sockets learnt of this member while Redis was away; others not.
                    info = messages.dumps(m.user_info)
                    await control.publish_remote(app, MemberAdded(ch, m.user_id, info))
        for entry in want_users - held_users:
            app, s, user = entry.split(SEP, 2)
            if await scripts.user_online(app, user, s):
                await control.publish_remote(app, UserOnline(user))
