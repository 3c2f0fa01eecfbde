"""Presence membership: users, each connected through one or more sockets.

Pusher: ``member_added`` goes out when a user's first socket joins a channel and
``member_removed`` when their last socket leaves, never once per socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.protocol.session import Member


@dataclass(slots=True)
class _Entry:
    info: Any
    sockets: set[str] = field(default_factory=set)


@dataclass(slots=True)
class PresenceChannel:
    """The members of one presence channel, in join order."""

    _users: dict[str, _Entry] = field(default_factory=dict)

    def join(self, socket_id: str, member: Member) -> bool:
        """Add a socket for ``member``; True when the user is new to the channel."""
        entry = self._users.get(member.user_id)
        if entry is None:
            self._users[member.user_id] = _Entry(member.user_info, {socket_id})
            return True
        entry.sockets.add(socket_id)
        return False

    def leave(self, socket_id: str, user_id: str) -> bool:
        """Remove a socket; True when it was the user's last one in the channel."""
        entry = self._users.get(user_id)
        if entry is None or socket_id not in entry.sockets:
            return False
        entry.sockets.discard(socket_id)
        if entry.sockets:
            return False
        del self._users[user_id]
        return True

    def has_user(self, user_id: str) -> bool:
        return user_id in self._users

    def members(self) -> list[Member]:
        return [Member(user_id, entry.info) for user_id, entry in self._users.items()]

    def __len__(self) -> int:
        return len(self._users)


def roster(members: list[Member]) -> dict[str, Any]:
    """The ``presence`` object of ``subscription_succeeded``: ids, hash and count."""
    return {
        "presence": {
            "ids": [m.user_id for m in members],
            "hash": {m.user_id: m.user_info for m in members},
            "count": len(members),
        }
    }
