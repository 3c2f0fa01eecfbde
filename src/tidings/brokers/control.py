"""Control messages: cluster-wide events every node acts on for its own sockets.

One frozen dataclass per kind, so the node dispatches them with one exhaustive ``match``
(mypy names the forgotten case). ``bus.py`` maps each class to the ``"k"`` kind it has on
the Redis bus; the fields travel as ``u`` (``user_id``), ``c`` (``channel``) and ``d``
(``user_info`` or ``data``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Terminate:
    """The app terminated ``user_id``'s connections (REST ``terminate_connections``)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class UserOnline:
    """``user_id`` signed in on its first socket anywhere (watchlist ``online``)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class UserOffline:
    """``user_id``'s last signed-in socket anywhere is gone (watchlist ``offline``)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class MemberAdded:
    """A new user in presence ``channel``; ``user_info``: its JSON ("" when none)."""

    channel: str
    user_id: str
    user_info: str = ""


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """``user_id``'s last socket left presence ``channel``."""

    channel: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Recount:
    """``channel``'s subscription count changed without a local join or leave (a dead
    node was reaped): nodes with subscribers send them the new count."""

    channel: str


@dataclass(frozen=True, slots=True)
class Console:
    """A console watch or logout (``data``: JSON, read by ``console/watch.py``)."""

    data: str


ControlMessage = (
    Terminate | UserOnline | UserOffline | MemberAdded | MemberRemoved | Recount | Console
)
