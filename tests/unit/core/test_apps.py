"""core/apps.py: App limits, its session policy, and the registry."""

from __future__ import annotations

import pytest

from tidings.core.apps import App, AppRegistry, HistoryRule
from tidings.protocol.session import SessionPolicy


def test_defaults_match_the_contract() -> None:
    app = App("1", "k", "s")
    assert (app.enabled, app.client_events, app.subscription_count) == (True, True, False)
    assert (app.max_connections, app.max_client_events_per_second) == (10000, 10)
    assert (app.max_backend_events_per_second, app.max_event_payload_bytes) == (10000, 10240)
    assert (app.max_event_name_length, app.max_channel_name_length) == (200, 200)
    assert (app.max_channels_per_event, app.max_batch_size) == (100, 10)
    assert (app.max_presence_members, app.max_presence_member_bytes) == (100, 1024)
    assert (app.max_message_bytes, app.max_channels_per_connection) == (32768, 100)
    assert (app.authorized_connections, app.authorized_connections_timeout) == (False, 30.0)
    assert (app.cache_ttl, app.allowed_origins) == (1800.0, ())


def test_session_policy() -> None:
    app = App(
        "1",
        "k",
        "s",
        client_events=False,
        max_client_events_per_second=3,
        max_event_payload_bytes=100,
        max_event_name_length=50,
        max_channel_name_length=60,
        max_channels_per_connection=7,
        max_presence_member_bytes=500,
    )
    assert app.session_policy(60, 15) == SessionPolicy(
        key="k",
        secret="s",
        activity_timeout=60,
        pong_timeout=15,
        client_events=False,
        max_client_events_per_second=3,
        max_event_payload_bytes=100,
        max_event_name_length=50,
        max_channel_name_length=60,
        max_channels_per_connection=7,
        max_presence_member_bytes=500,
        authorized_connections_timeout=None,
    )


def test_session_policy_authorized_connections() -> None:
    app = App("1", "k", "s", authorized_connections=True, authorized_connections_timeout=5)
    assert app.session_policy(120, 30).authorized_connections_timeout == 5
    off = App("1", "k", "s", authorized_connections_timeout=5)
    assert off.session_policy(120, 30).authorized_connections_timeout is None


def test_origin_allowed() -> None:
    assert App("1", "k", "s").origin_allowed(None)
    assert App("1", "k", "s").origin_allowed("https://x")
    listed = App("1", "k", "s", allowed_origins=("https://a.example",))
    assert listed.origin_allowed("https://a.example")
    assert not listed.origin_allowed("https://b.example")
    assert not listed.origin_allowed(None)
    assert App("1", "k", "s", allowed_origins=("*",)).origin_allowed(None)


def test_registry() -> None:
    a, b = App("1", "ka", "sa"), App("2", "kb", "sb")
    registry = AppRegistry.of([a, b])
    assert registry.by_id("1") is a and registry.by_key("kb") is b
    assert registry.by_id("ka") is None and registry.by_key("1") is None
    assert list(registry) == [a, b]
    assert list(AppRegistry.of([])) == []


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate app id '1'"):
        AppRegistry.of([App("1", "ka", "s"), App("1", "kb", "s")])
    with pytest.raises(ValueError, match="duplicate app key 'k'"):
        AppRegistry.of([App("1", "k", "s"), App("2", "k", "s")])


def test_the_first_matching_history_rule_decides() -> None:
    chat, rest = HistoryRule("chat-*", size=5, ttl=60), HistoryRule("*-feed")
    app = App("1", "k", "s", history=(chat, rest, HistoryRule("chat-x-feed", size=9)))
    assert app.history_rule("chat-x-feed") is chat
    assert app.history_rule("news-feed") is rest
    assert app.history_rule("private-chat-1") is None  # a glob matches the whole name
    assert App("1", "k", "s").history_rule("chat-1") is None


@pytest.mark.parametrize(
    "event", ["pusher:cache_miss", "pusher_internal:member_added", "tidings:snapshot"]
)
def test_events_pusher_or_tidings_send_are_never_stored(event: str) -> None:
    app = App("1", "k", "s", history=(HistoryRule("*"),))
    assert app.stored("presence-room", event) is None
    assert app.stored("presence-room", "client-typing") == HistoryRule("*")
    assert app.stored("presence-room", "pusher-like-but-not:x") == HistoryRule("*")
