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


@dataclass(slots=True)
class MemberEvent:
    """A presence change as a subscriber sees it."""

    added: bool
    user_id: str
    user_info: Any = None


@dataclass(slots=True)
class PresenceView:
    """What one subscribed socket knows of a presence channel's members.

    Member events reach every node, and a socket's roster snapshot and the events around it
    can cross (another node's join lands between this socket's snapshot and its
    subscription). The view makes the events a socket sees consistent with its snapshot:
    an event is passed on only when it changes what the socket knows, and events that
    arrive while the snapshot is being taken are held and replayed against it.

    After a broker outage the view is rechecked against the cluster roster
    (:meth:`begin_recheck`, then :meth:`recheck`); a user whose event arrives while that
    roster is read is left as the event said, as the event may be the newer of the two.
    """

    known: set[str] | None = None  # None until the snapshot is taken
    pending: list[MemberEvent] = field(default_factory=list)
    touched: set[str] | None = None  # users with an event since begin_recheck()

    def offer(self, event: MemberEvent) -> bool:
        """Whether to send ``event`` to the socket now (held while the snapshot is pending)."""
        if self.touched is not None:
            self.touched.add(event.user_id)
        if self.known is None:
            self.pending.append(event)
            return False
        return self._apply(event)

    def begin_recheck(self) -> None:
        """The cluster roster is about to be read: note the users events arrive for. A
        socket whose snapshot is still pending is skipped (its snapshot will be current)."""
        self.touched = set() if self.known is not None else None

    def cancel_recheck(self) -> list[MemberEvent]:
        """The roster could not be trusted after all; nothing to send."""
        self.touched = None
        return []

    def recheck(self, members: list[Member]) -> list[MemberEvent]:
        """The events that bring what the socket knows to ``members`` (read after
        :meth:`begin_recheck`): removals first, then additions in roster order."""
        touched, self.touched = self.touched, None
        if touched is None or self.known is None:
            return []  # not begun (the snapshot was pending)
        roster = {m.user_id: m.user_info for m in members}
        gone = sorted(self.known - roster.keys() - touched)
        events = [MemberEvent(False, user_id) for user_id in gone]
        events += [
            MemberEvent(True, user_id, info)
            for user_id, info in roster.items()
            if user_id not in self.known and user_id not in touched
        ]
        for event in events:
            self._apply(event)
        return events

    def snapshot(self, user_ids: list[str]) -> list[MemberEvent]:
        """Take the roster sent in subscription_succeeded; returns the held events to send
        after it."""
        self.known = set(user_ids)
        held, self.pending = self.pending, []
        return [event for event in held if self._apply(event)]

    def _apply(self, event: MemberEvent) -> bool:
        assert self.known is not None
        if event.added:
            if event.user_id in self.known:
                return False
            self.known.add(event.user_id)
            return True
        if event.user_id not in self.known:
            return False
        self.known.discard(event.user_id)
        return True
