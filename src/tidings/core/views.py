"""What each socket on this node knows of each presence channel's members.

One :class:`~tidings.core.presence.PresenceView` per subscribed socket and channel; this
module keeps them, and says which sockets a member event or a roster recheck is for.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from tidings.core.presence import MemberEvent, PresenceView
from tidings.protocol.session import Member


@dataclass(slots=True)
class PresenceViews:
    """Presence channel -> socket id -> that socket's view of the members."""

    _channels: dict[str, dict[str, PresenceView]] = field(default_factory=dict)

    def open(self, channel: str, socket_id: str) -> PresenceView:
        """The view of a socket joining ``channel`` (kept if it is joining again)."""
        return self._channels.setdefault(channel, {}).setdefault(socket_id, PresenceView())

    def drop(self, channel: str, socket_id: str) -> None:
        views = self._channels.get(channel)
        if views is not None:
            views.pop(socket_id, None)
            if not views:
                del self._channels[channel]

    def channels(self) -> list[str]:
        return list(self._channels)

    def offer(self, channel: str, event: MemberEvent, connected: Container[str]) -> list[str]:
        """The sockets to send ``event`` to now: connected ones whose view it changes
        (a view waiting for its snapshot holds it instead)."""
        return [
            socket_id
            for socket_id, view in list(self._channels.get(channel, {}).items())
            if socket_id in connected and view.offer(event)
        ]

    def begin_recheck(self, channel: str) -> None:
        """The cluster roster of ``channel`` is about to be read (after a broker outage)."""
        for view in self._channels.get(channel, {}).values():
            view.begin_recheck()

    def recheck(
        self, channel: str, members: list[Member] | None
    ) -> list[tuple[str, list[MemberEvent]]]:
        """Each socket's events that bring it to ``members``, the roster read after
        :meth:`begin_recheck`; None when that roster cannot be trusted (nothing is sent)."""
        return [
            (socket_id, view.recheck(members) if members is not None else view.cancel_recheck())
            for socket_id, view in list(self._channels.get(channel, {}).items())
        ]
