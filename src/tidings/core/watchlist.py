"""Watchlists: which sockets on this node watch which users, and what each was last told.

Pusher: a signed-in user's ``watchlist`` names users whose ``online`` / ``offline`` the
socket is sent (``pusher_internal:watchlist_events``). A socket is first sent the watched
users that are online when it signs in (a snapshot read from the broker), then every change.
The snapshot and the changes can cross: a change that arrives while the snapshot is read is
newer than it, so the change wins, and no socket is told the same thing twice. ``offline``
goes only to sockets that were told ``online``.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Watchlist:
    """Watched user -> watching socket -> what that socket was last told: True online,
    False offline, None nothing yet (its sign-in snapshot is still on its way)."""

    _watchers: dict[str, dict[str, bool | None]] = field(default_factory=dict)

    def watch(self, socket_id: str, watched: Iterable[str]) -> None:
        """A socket signed in with ``watched`` as its watchlist; it was told nothing yet."""
        for user_id in watched:
            self._watchers.setdefault(user_id, {})[socket_id] = None

    def snapshot(
        self, socket_id: str, watched: Iterable[str], online: Collection[str]
    ) -> list[str]:
        """The watched users to send as ``online`` after the sign-in snapshot ``online``.

        A user an event already told this socket about is left as the event said (it is
        newer than the snapshot); so is a socket that signed out meanwhile.
        """
        told = []
        for user_id in watched:
            sockets = self._watchers.get(user_id)
            if sockets is None or socket_id not in sockets or sockets[socket_id] is not None:
                continue
            is_online = user_id in online
            sockets[socket_id] = is_online
            if is_online:
                told.append(user_id)
        return told

    def unwatch(self, socket_id: str, watched: Iterable[str]) -> None:
        """A socket signed out (or closed): it watches nobody any more."""
        for user_id in watched:
            sockets = self._watchers.get(user_id)
            if sockets is not None:
                sockets.pop(socket_id, None)
                if not sockets:
                    del self._watchers[user_id]

    def announce(self, user_id: str, online: bool, connected: Container[str]) -> list[str]:
        """The sockets to tell that ``user_id`` went online (or offline).

        Only ``connected`` sockets count: one that is closing keeps what it was told. A
        socket already told the same thing is skipped; ``offline`` reaches only sockets
        that were told ``online`` (one whose snapshot is pending is just marked offline).
        """
        recipients = []
        for socket_id, known in list(self._watchers.get(user_id, {}).items()):
            if socket_id not in connected or known is online:
                continue
            self._watchers[user_id][socket_id] = online
            if online or known:
                recipients.append(socket_id)
        return recipients

    def told(self, user_id: str, socket_id: str) -> bool | None:
        """What ``socket_id`` was last told of ``user_id`` (None: nothing, or not watching)."""
        return self._watchers.get(user_id, {}).get(socket_id)

    def watched(self) -> set[str]:
        """The users some socket on this node watches."""
        return set(self._watchers)
