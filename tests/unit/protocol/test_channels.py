"""protocol/channels.py: channel kinds from prefixes, and name rules."""

from __future__ import annotations

import pytest

from tidings.protocol.channels import (
    CACHE_PREFIXES,
    ChannelKind,
    ChannelType,
    channel_type,
    name_error,
)


@pytest.mark.parametrize(
    ("name", "kind", "cache"),
    [
        ("my-channel", ChannelKind.PUBLIC, False),
        ("cache-news", ChannelKind.PUBLIC, True),
        ("private-chat", ChannelKind.PRIVATE, False),
        ("private-cache-chat", ChannelKind.PRIVATE, True),
        ("private-encrypted-chat", ChannelKind.ENCRYPTED, False),
        ("private-encrypted-cache-chat", ChannelKind.ENCRYPTED, True),
        ("presence-room", ChannelKind.PRESENCE, False),
        ("presence-cache-room", ChannelKind.PRESENCE, True),
        ("#server-to-user-u1", ChannelKind.USER, False),
        # Prefixes are anchored.
        ("x-private-y", ChannelKind.PUBLIC, False),
        ("x-presence-y", ChannelKind.PUBLIC, False),
        ("public-cache-x", ChannelKind.PUBLIC, False),
        ("private", ChannelKind.PUBLIC, False),
        ("presence", ChannelKind.PUBLIC, False),
    ],
)
def test_channel_type(name: str, kind: ChannelKind, cache: bool) -> None:
    assert channel_type(name) == ChannelType(kind, cache)
    assert name.startswith(CACHE_PREFIXES) is cache


def test_cache_prefixes_say_what_channel_type_says() -> None:
    parts = ["", "cache-", "private-", "encrypted-", "presence-", "#server-to-user-", "x"]
    names = [a + b + c + "n" for a in parts for b in parts for c in parts]
    assert len(names) == 343
    for name in names:
        assert name.startswith(CACHE_PREFIXES) is channel_type(name).cache, name


@pytest.mark.parametrize(
    ("kind", "needs_auth", "is_presence", "client_events"),
    [
        (ChannelKind.PUBLIC, False, False, False),
        (ChannelKind.PRIVATE, True, False, True),
        # Pusher's client libraries refuse client events on encrypted channels.
        (ChannelKind.ENCRYPTED, True, False, False),
        (ChannelKind.PRESENCE, True, True, True),
        (ChannelKind.USER, False, False, False),
    ],
)
def test_channel_type_properties(
    kind: ChannelKind, needs_auth: bool, is_presence: bool, client_events: bool
) -> None:
    ctype = ChannelType(kind, cache=False)
    assert ctype.needs_auth is needs_auth
    assert ctype.is_presence is is_presence
    assert ctype.accepts_client_events is client_events


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "my-channel",
        "A-Za-z0-9_-=@,.;",
        "private-encrypted-x",
        "presence-room@1",
        "#server-to-user-u1",
        "#server-to-user-any thing",
        "x" * 200,
    ],
)
def test_valid_names(name: str) -> None:
    assert name_error(name, 200) is None


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "channel name must be a non-empty string"),
        (None, "channel name must be a non-empty string"),
        (42, "channel name must be a non-empty string"),
        (["a"], "channel name must be a non-empty string"),
        ("x" * 201, "channel name longer than 200 characters"),
        ("#server-to-user-", "user channel without a user id"),
        ("#other", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("a b", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("a/b", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("a:b", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("é", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("a\n", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
    ],
)
def test_invalid_names(name: object, error: str) -> None:
    assert name_error(name, 200) == error


def test_max_length_is_a_parameter() -> None:
    assert name_error("abcd", 4) is None
    assert name_error("abcde", 4) == "channel name longer than 4 characters"
