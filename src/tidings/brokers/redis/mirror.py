"""This node's own sockets, as the node told Redis about them.

Authoritative for what this node holds: while Redis is unreachable the interfaces answer
from it, and when Redis returns the resync makes Redis hold exactly it (``liveness.py``).
"""

from __future__ import annotations

from collections import defaultdict

from tidings.brokers.redis.scripts import presence_entry, sub_entry, user_entry
from tidings.protocol.session import Member


class Mirror:
    def __init__(self) -> None:
        self.subs: dict[tuple[str, str], set[str]] = {}
        self.presence: dict[tuple[str, str], dict[str, Member]] = {}  # socket id -> member
        self.users: dict[tuple[str, str], set[str]] = defaultdict(set)  # (app, user) -> sockets
        # Bumped by every change, so a resync can tell whether sockets came or went while
        # it ran.
        self.version = 0

    def changed(self) -> None:
        self.version += 1

    def roster(self, app_id: str, channel: str) -> list[Member]:
        """The channel's members among this node's sockets, one entry per user."""
        members: dict[str, Member] = {}
        for member in self.presence.get((app_id, channel), {}).values():
            members.setdefault(member.user_id, member)
        return list(members.values())

    def sub_entries(self) -> set[str]:
        return {sub_entry(app, ch, s) for (app, ch), sockets in self.subs.items() for s in sockets}

    def presence_entries(self) -> set[str]:
        return {
            presence_entry(app, ch, s, m.user_id)
            for (app, ch), members in self.presence.items()
            for s, m in members.items()
        }

    def user_entries(self) -> set[str]:
        return {user_entry(app, s, u) for (app, u), sockets in self.users.items() for s in sockets}
