"""This node's connections: who may connect, by socket id per app, and signed-in users.

Sans-I/O: a connection is whatever object the edge hands in (the registry never calls it),
and randomness comes in as an argument, so every decision here is testable with plain
values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tidings.core.apps import App
from tidings.protocol.errors import MESSAGES, ErrorCode

C = TypeVar("C")

SUPPORTED_PROTOCOLS = range(5, 8)  # Pusher protocol versions accepted (pusher-js sends 7)
SOCKET_ID_PART = 10**9  # Pusher socket ids are "<int>.<int>"; each part is in 1..10**9


def handshake_refusal(
    app: App | None, protocol: str | None, origin: str | None
) -> tuple[ErrorCode, str] | None:
    """Why a connection is refused from its handshake alone (app, protocol, origin), or None.

    Capacity is the registry's to judge (:meth:`Registry.refusal`), after this.
    """
    if app is None:
        return ErrorCode.APP_NOT_FOUND, MESSAGES[ErrorCode.APP_NOT_FOUND]
    if protocol is None:
        return ErrorCode.NO_PROTOCOL, MESSAGES[ErrorCode.NO_PROTOCOL]
    if not protocol.isdigit():
        return ErrorCode.INVALID_VERSION, MESSAGES[ErrorCode.INVALID_VERSION]
    if int(protocol) not in SUPPORTED_PROTOCOLS:
        return ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}"
    if not app.origin_allowed(origin):
        return ErrorCode.UNAUTHORIZED, "Origin not allowed"
    return None


@dataclass(slots=True)
class AppConnections(Generic[C]):
    """One app's connections on this node by socket id, and the sockets of each signed-in
    user (pusher: a user may be signed in from several tabs at once)."""

    _by_socket: dict[str, C] = field(default_factory=dict)
    _users: dict[str, set[str]] = field(default_factory=dict)

    def get(self, socket_id: str) -> C | None:
        return self._by_socket.get(socket_id)

    def __contains__(self, socket_id: object) -> bool:
        return socket_id in self._by_socket

    def __len__(self) -> int:
        return len(self._by_socket)

    def __iter__(self) -> Iterator[C]:
        return iter(self._by_socket.values())

    def sign_in(self, user_id: str, socket_id: str) -> None:
        self._users.setdefault(user_id, set()).add(socket_id)

    def sign_out(self, user_id: str, socket_id: str) -> None:
        """Forget one socket of ``user_id``; the user goes with their last socket."""
        sockets = self._users.get(user_id)
        if sockets is not None:
            sockets.discard(socket_id)
            if not sockets:
                del self._users[user_id]

    def of_user(self, user_id: str) -> list[C]:
        """The connections signed in as ``user_id`` that are still registered."""
        found = (self._by_socket.get(s) for s in self._users.get(user_id, ()))
        return [connection for connection in found if connection is not None]

    def users(self) -> set[str]:
        return set(self._users)


class Registry(Generic[C]):
    """Every app's connections on this node, with the node-wide count and its limit."""

    __slots__ = ("_apps", "_count", "_elsewhere", "max_connections")

    def __init__(self, app_ids: list[str], max_connections: int) -> None:
        self._apps: dict[str, AppConnections[C]] = {a: AppConnections() for a in app_ids}
        self._count = 0
        self._elsewhere: dict[str, int] = {}  # app id -> connections on other nodes
        self.max_connections = max_connections

    def counts(self) -> dict[str, int]:
        """Connections per app on this node (every app, zeros too)."""
        return {app_id: len(connections) for app_id, connections in self._apps.items()}

    def elsewhere(self, counts: Mapping[str, int]) -> None:
        """The other nodes' connections per app, as last reported: an app's
        ``max_connections`` counts them too."""
        self._elsewhere = dict(counts)

    @property
    def count(self) -> int:
        """Connections registered on this node, all apps together."""
        return self._count

    def of(self, app_id: str) -> AppConnections[C]:
        return self._apps[app_id]

    def all(self) -> list[C]:
        """A snapshot, safe to iterate while connections come and go."""
        return [c for connections in self._apps.values() for c in connections]

    def refusal(self, app: App, draining: bool) -> ErrorCode | None:
        """Why a new connection to ``app`` is refused now, or None.

        Pusher: 4003 for a disabled app, 4100 when over capacity (the node's or the app's
        quota); 4200 while draining, so that the client reconnects elsewhere at once.
        """
        if not app.enabled:
            return ErrorCode.APP_DISABLED
        if draining:
            return ErrorCode.RECONNECT
        if self._count >= self.max_connections:
            return ErrorCode.OVER_CAPACITY
        if len(self._apps[app.id]) + self._elsewhere.get(app.id, 0) >= app.max_connections:
            return ErrorCode.OVER_CONNECTION_QUOTA
        return None

    def free_socket_id(self, app_id: str, draw: Callable[[int], int]) -> str:
        """A socket id not in use in ``app_id``; ``draw(n)`` returns an int in [0, n)."""
        taken = self._apps[app_id]
        while True:
            socket_id = f"{draw(SOCKET_ID_PART) + 1}.{draw(SOCKET_ID_PART) + 1}"
            if socket_id not in taken:
                return socket_id

    def add(self, app_id: str, socket_id: str, connection: C) -> None:
        """Register a connection (one with the same socket id is replaced, counted once)."""
        by_socket = self._apps[app_id]._by_socket
        if socket_id not in by_socket:
            self._count += 1
        by_socket[socket_id] = connection

    def remove(self, app_id: str, socket_id: str) -> C | None:
        """Unregister a socket; None when it was not (or no longer) registered."""
        connection = self._apps[app_id]._by_socket.pop(socket_id, None)
        if connection is not None:
            self._count -= 1
        return connection
