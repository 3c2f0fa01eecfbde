"""Channel kinds and name rules.

Pusher: names use only ``A-Z a-z 0-9 _ - = @ , . ;`` and ``#`` is reserved for the
server (``#server-to-user-{id}``). Prefixes are anchored: ``x-private-y`` is public.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

NAME_PATTERN = re.compile(r"\A[A-Za-z0-9_\-=@,.;]+\Z")
USER_CHANNEL_PREFIX = "#server-to-user-"


class ChannelKind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "private-encrypted"
    PRESENCE = "presence"
    USER = "user"  # "#server-to-user-{id}": events for one signed-in user


@dataclass(frozen=True, slots=True)
class ChannelType:
    kind: ChannelKind
    cache: bool

    @property
    def needs_auth(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)

    @property
    def is_presence(self) -> bool:
        return self.kind is ChannelKind.PRESENCE

    @property
    def accepts_client_events(self) -> bool:
        """Pusher: client events only on private and presence channels.

        Not on ``private-encrypted-`` ones: the Pusher client libraries refuse to send them
        ("Client events are not supported on encrypted channels"), so a plaintext
        ``client-*`` event there can only come from a client that bypassed its library.
        """
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


# The few channel types there are, made once: channel_type() runs for every channel of
# every publication, and building a frozen dataclass costs more than finding its prefix.
_USER = ChannelType(ChannelKind.USER, cache=False)
_PUBLIC = ChannelType(ChannelKind.PUBLIC, cache=False)
_PUBLIC_CACHE = ChannelType(ChannelKind.PUBLIC, cache=True)
_PREFIXED = tuple(
    (prefix, prefix + "cache-", ChannelType(kind, cache=False), ChannelType(kind, cache=True))
    for prefix, kind in (
        ("private-encrypted-", ChannelKind.ENCRYPTED),
        ("private-", ChannelKind.PRIVATE),
        ("presence-", ChannelKind.PRESENCE),
    )
)


# Every prefix channel_type() reads as a cache channel: ``name.startswith(CACHE_PREFIXES)``
# is ``channel_type(name).cache`` in one call (a user channel's "#" begins none of them).
CACHE_PREFIXES = ("cache-", *(cache_prefix for _, cache_prefix, _, _ in _PREFIXED))


def channel_type(name: str) -> ChannelType:
    """The kind of a channel, from its prefix (the cache- variants included)."""
    if name.startswith(USER_CHANNEL_PREFIX):
        return _USER
    for prefix, cache_prefix, plain, cached in _PREFIXED:
        if name.startswith(prefix):
            return cached if name.startswith(cache_prefix) else plain
    return _PUBLIC_CACHE if name.startswith("cache-") else _PUBLIC


def name_error(name: object, max_length: int) -> str | None:
    """Why ``name`` is not a valid client-facing channel name, or None if it is."""
    if not isinstance(name, str) or not name:
        return "channel name must be a non-empty string"
    if len(name) > max_length:
        return f"channel name longer than {max_length} characters"
    if name.startswith(USER_CHANNEL_PREFIX):
        if len(name) == len(USER_CHANNEL_PREFIX):
            return "user channel without a user id"
        return None
    if not NAME_PATTERN.match(name):
        return "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"
    return None
