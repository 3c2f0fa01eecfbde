"""Apps: credentials, switches and limits, and the registry the server looks them up in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from tidings.core.webhooks import WebhookTarget
from tidings.protocol.session import SessionPolicy

# Events Pusher or Tidings itself sends (presence member events, subscription replies, the
# live snapshot...): state of one moment, never replayed as if it had just happened.
UNSTORED_EVENT_PREFIXES = ("pusher:", "pusher_internal:", "tidings:")


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Channels matching ``pattern`` (a glob: ``chat-*``) keep their last ``size``
    publications for ``ttl`` seconds after the last one (docs/history.md)."""

    pattern: str
    size: int = 100
    ttl: float = 300.0


def rule_of(rules: Iterable[HistoryRule], channel: str) -> HistoryRule | None:
    """The first of ``rules`` whose pattern matches ``channel``, or None."""
    for rule in rules:
        if fnmatchcase(channel, rule.pattern):
            return rule
    return None


def stored_under(rules: Iterable[HistoryRule], channel: str, event: str) -> HistoryRule | None:
    """The rule under which ``event`` on ``channel`` is kept, or None: the channel keeps no
    history, or the event is one Pusher or Tidings sends. The nodes and the publish-only
    Redis client decide with this one function."""
    if event.startswith(UNSTORED_EVENT_PREFIXES):
        return None
    return rule_of(rules, channel)


@dataclass(frozen=True, slots=True)
class App:
    """One Pusher app. The defaults of its limits are in config.AppSettings and the README."""

    id: str
    key: str
    secret: str
    enabled: bool = True
    max_connections: int = 10000
    client_events: bool = True
    max_client_events_per_second: int = 10
    max_backend_events_per_second: int = 10000
    max_event_payload_bytes: int = 10240
    max_event_name_length: int = 200
    max_channel_name_length: int = 200
    max_channels_per_event: int = 100
    max_batch_size: int = 10
    max_presence_members: int = 100
    max_presence_member_bytes: int = 1024
    max_message_bytes: int = 32768
    max_channels_per_connection: int = 100
    subscription_count: bool = False
    authorized_connections: bool = False
    authorized_connections_timeout: float = 30.0
    cache_ttl: float = 1800.0
    allowed_origins: tuple[str, ...] = ()
    webhooks: tuple[WebhookTarget, ...] = ()
    # Live channels (private-live.*): where `tidings serve` fetches snapshots, and the
    # bounds of one fetch and of what a socket holds meanwhile (docs/live-snapshot.md).
    live_snapshot_url: str | None = None
    live_snapshot_timeout: float = 10.0
    live_snapshot_max_bytes: int = 8 * 1024 * 1024
    live_snapshot_concurrency: int = 32
    live_hold_max_messages: int = 10_000
    history: tuple[HistoryRule, ...] = ()

    def session_policy(self, activity_timeout: float, pong_timeout: float) -> SessionPolicy:
        return SessionPolicy(
            key=self.key,
            secret=self.secret,
            activity_timeout=activity_timeout,
            pong_timeout=pong_timeout,
            client_events=self.client_events,
            max_client_events_per_second=self.max_client_events_per_second,
            max_event_payload_bytes=self.max_event_payload_bytes,
            max_event_name_length=self.max_event_name_length,
            max_channel_name_length=self.max_channel_name_length,
            max_channels_per_connection=self.max_channels_per_connection,
            max_presence_member_bytes=self.max_presence_member_bytes,
            authorized_connections_timeout=(
                self.authorized_connections_timeout if self.authorized_connections else None
            ),
        )

    def history_rule(self, channel: str) -> HistoryRule | None:
        """The history rule of ``channel``: the first one whose pattern matches, or None."""
        return rule_of(self.history, channel)

    def stored(self, channel: str, event: str) -> HistoryRule | None:
        """The rule under which ``event`` on ``channel`` is kept in history, or None: the
        channel keeps none, or the event is one Pusher or Tidings sends."""
        return stored_under(self.history, channel, event)

    def origin_allowed(self, origin: str | None) -> bool:
        """No list means any origin; otherwise an exact match or ``*``."""
        if not self.allowed_origins or "*" in self.allowed_origins:
            return True
        return origin is not None and origin in self.allowed_origins


@dataclass(slots=True)
class AppRegistry:
    """Apps by id and by key. Keys and ids are unique (checked by the configuration)."""

    _by_id: dict[str, App] = field(default_factory=dict)
    _by_key: dict[str, App] = field(default_factory=dict)

    @classmethod
    def of(cls, apps: Iterable[App]) -> AppRegistry:
        registry = cls()
        for app in apps:
            if app.id in registry._by_id:
                raise ValueError(f"duplicate app id {app.id!r}")
            if app.key in registry._by_key:
                raise ValueError(f"duplicate app key {app.key!r}")
            registry._by_id[app.id] = app
            registry._by_key[app.key] = app
        return registry

    def by_id(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> App | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[App]:
        return iter(self._by_id.values())
