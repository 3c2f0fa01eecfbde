"""Typed settings from a TOML file, ``TIDINGS_*`` environment variables and CLI flags.

Precedence, lowest first: defaults, the TOML file, environment variables, flags. Apps
come from ``[[apps]]`` in the file, ``TIDINGS_APPS`` or ``--app`` (the last one given
replaces the others). A bad value raises :class:`ConfigError` naming the setting and
the value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tidings.core.apps import App, HistoryRule
from tidings.core.client_address import parse_networks
from tidings.core.webhooks import EVENT_TYPES, WebhookTarget
from tidings.redaction import UNPARSABLE, public_url

# RFC 9110 field names ("token").
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
DEV_APP = {"id": "12345", "key": "app-key", "secret": "app-secret"}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting and the value."""


class WebhookFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel_name_starts_with: str = ""
    channel_name_ends_with: str = ""


class AppWebhookSettings(BaseModel):
    """One ``[[apps.webhooks]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    event_types: tuple[str, ...] = ()
    filter: WebhookFilter = WebhookFilter()
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _parsable(cls, url: str) -> str:
        # Caught here rather than at the first delivery, where the HTTP client's error
        # would be the only trace of it.
        if public_url(url) == UNPARSABLE or not urlsplit(url).hostname:
            raise ValueError("not a valid http(s)://host[:port]/path URL")
        return url

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        # Named, never quoted: header values are usually credentials.
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError("a header name may hold only letters, digits and !#$%&'*+-.^_`|~")
            if "\r" in value or "\n" in value:
                raise ValueError(f"the value of header {name} holds a line break")
        return headers

    @model_validator(mode="after")
    def _one_authorization(self) -> AppWebhookSettings:
        # aiohttp refuses to send a request with both, so no batch would ever be delivered.
        parts = urlsplit(self.url)
        has_header = any(name.lower() == "authorization" for name in self.headers)
        if has_header and (parts.username or parts.password):
            raise ValueError(
                "credentials in the url and an Authorization header cannot go together: "
                "keep one of them"
            )
        return self

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(types) - EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r} (known: {sorted(EVENT_TYPES)})")
        return types

    def to_target(self) -> WebhookTarget:
        return WebhookTarget(
            url=self.url,
            event_types=frozenset(self.event_types),
            starts_with=self.filter.channel_name_starts_with,
            ends_with=self.filter.channel_name_ends_with,
            headers=tuple(sorted(self.headers.items())),
        )


class AppHistorySettings(BaseModel):
    """One ``[[apps.history]]`` entry: channels matching ``pattern`` keep history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A channel name with the glob characters * ? [ ] (protocol/channels.py's alphabet).
    pattern: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-=@,.;*?\[\]!]+$")
    size: int = Field(100, ge=1, le=10_000)
    ttl: float = Field(300.0, ge=1, le=86_400)

    def to_rule(self) -> HistoryRule:
        return HistoryRule(self.pattern, self.size, self.ttl)


class AppSettings(BaseModel):
    """One ``[[apps]]`` entry. Defaults match Pusher's documented limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-.]+$")
    secret: str = Field(min_length=1, max_length=256)
    enabled: bool = True
    max_connections: int = Field(10000, ge=1)
    client_events: bool = True
    max_client_events_per_second: int = Field(10, ge=1)
    max_backend_events_per_second: int = Field(10000, ge=1)
    max_event_payload_bytes: int = Field(10240, ge=1, le=10 * 1024 * 1024)
    max_event_name_length: int = Field(200, ge=1, le=10000)
    max_channel_name_length: int = Field(200, ge=1, le=10000)
    max_channels_per_event: int = Field(100, ge=1)
    max_batch_size: int = Field(10, ge=1)
    max_presence_members: int = Field(100, ge=1)
    max_presence_member_bytes: int = Field(1024, ge=2)
    max_message_bytes: int = Field(32768, ge=256, le=64 * 1024 * 1024)
    max_channels_per_connection: int = Field(100, ge=1)
    subscription_count: bool = False
    authorized_connections: bool = False
    authorized_connections_timeout: float = Field(30.0, gt=0)
    cache_ttl: float = Field(1800.0, gt=0)
    allowed_origins: tuple[str, ...] = ()
    webhooks: tuple[AppWebhookSettings, ...] = ()
    # Live channels (docs/live-snapshot.md): the app's signed snapshot endpoint, the time and size
    # one snapshot may take, how many are fetched at once (more wait their turn, within
    # the timeout), and what one subscribing socket may hold meanwhile.
    live_snapshot_url: str | None = Field(None, pattern=r"^https?://")
    live_snapshot_timeout: float = Field(10.0, gt=0, le=300)
    live_snapshot_max_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    live_snapshot_concurrency: int = Field(32, ge=1, le=10_000)
    live_hold_max_messages: int = Field(10_000, ge=1, le=1_000_000)
    # Channel history (docs/history.md): the first rule whose pattern matches a channel
    # decides its size and ttl; channels matching none keep no history.
    history: tuple[AppHistorySettings, ...] = Field((), max_length=100)

    @field_validator("live_snapshot_url")
    @classmethod
    def _snapshot_url(cls, url: str | None) -> str | None:
        if url is not None and (public_url(url) == UNPARSABLE or not urlsplit(url).hostname):
            raise ValueError("not a valid http(s)://host[:port]/path URL")
        return url

    def to_app(self) -> App:
        fields = self.model_dump(exclude={"webhooks", "history"})
        return App(
            **fields,
            webhooks=tuple(w.to_target() for w in self.webhooks),
            history=tuple(rule.to_rule() for rule in self.history),
        )


class Settings(BaseModel):
    """Server settings; every field is also ``TIDINGS_<NAME>`` and ``--<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(6001, ge=0, le=65535)
    activity_timeout: float = Field(120.0, gt=0, le=3600)
    pong_timeout: float = Field(30.0, gt=0, le=3600)
    max_connections: int = Field(100_000, ge=1)
    max_connection_rate: int = Field(10_000, ge=0)
    max_write_buffer: int = Field(1024 * 1024, ge=1024)
    # What reads a WebSocket after its handshake: "tidings", our own asyncio.Protocol
    # (server/websocket_protocol.py: no task, reader or queue per idle socket), or
    # "aiohttp", its WebSocket reader (the engine before issue 17).
    websocket_engine: Literal["tidings", "aiohttp"] = "tidings"
    max_request_body: int = Field(262144, ge=1024)
    # Signed POSTs to /apps/{id}/events and /batch_events answered by a lean HTTP/1.1
    # framer in front of aiohttp (server/lean_http.py, issue 18: about half the CPU per
    # publish), and so is the plain, admitted WebSocket upgrade opening a connection (with
    # websocket_engine = "tidings": about half the CPU per connect); every other request,
    # every refusal, and any it does not recognise, goes to aiohttp.
    lean_rest: bool = True
    shutdown_timeout: float = Field(10.0, ge=0)
    # Slow clients (server/connection_guard.py). A request's headers must be complete
    # within request_header_timeout of the accept (20 s: clients send them in one packet
    # right after connecting; nginx allows 60 s, Apache's mod_reqtimeout 20-40 s), its
    # body within request_body_timeout of the headers (30 s: max_request_body, 256 KiB,
    # at under 10 KiB/s). keepalive_timeout outlasts the 60 s idle timeout of common load
    # balancers, so they, not we, close idle pooled connections. max_pending_connections
    # caps the connections still sending their request (a slowloris holds thousands);
    # legitimate clients are pending for one round trip, so 4096 leaves room for a
    # reconnect storm at max_connection_rate.
    request_header_timeout: float = Field(20.0, gt=0, le=3600)
    request_body_timeout: float = Field(30.0, gt=0, le=3600)
    keepalive_timeout: float = Field(75.0, gt=0, le=3600)
    max_pending_connections: int = Field(4096, ge=1)
    max_connections_per_ip: int = Field(0, ge=0)  # 0: no limit
    trusted_proxies: tuple[str, ...] = ()  # addresses or CIDR blocks
    client_ip_header: str = Field("X-Forwarded-For", pattern=r"^[A-Za-z0-9\-]{1,64}$")
    shutdown_ready_delay: float = Field(2.0, ge=0, le=300)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Log every connection, subscription, client event and REST call (logger tidings.debug),
    # whatever log_level says for the rest.
    debug: bool = False
    log_format: Literal["auto", "json", "text"] = "auto"
    tls_cert: str | None = Field(None, min_length=1)
    tls_key: str | None = Field(None, min_length=1)
    http_path: str = Field("/pusher", pattern=r"^/[A-Za-z0-9_\-./]*$")
    http_session_timeout: float = Field(10.0, gt=0, le=3600)
    http_unconfirmed_timeout: float = Field(5.0, gt=0, le=3600)
    http_max_unconfirmed: int = Field(10_000, ge=1)
    http_bind_ip: bool = False
    # Redis mode: seconds an xhr_send waits for an earlier one of its client still on its
    # way through another node (docs/fallback.md); 0: applied in arrival order.
    http_send_order_wait: float = Field(0.5, ge=0, le=60)
    sse_ping_interval: float = Field(20.0, gt=0, le=3600)
    # How often a node checks that no channel with history lost its last publication on
    # the way to it (docs/recovery.md, "Gap-filling").
    history_check_interval: float = Field(5.0, ge=0.1, le=3600)
    redis: str | None = Field(
        None, pattern=r"^(redis|rediss|redis\+cluster|rediss\+cluster|unix)://"
    )
    # A Redis Cluster found from one of its nodes: the same as redis = "redis+cluster://…".
    redis_cluster: str | None = Field(None, pattern=r"^(redis|rediss)://")
    redis_prefix: str = Field("tidings", pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    redis_sharded: bool = False
    node_ttl: float = Field(15.0, ge=1, le=3600)
    workers: int = Field(1, ge=1, le=256)
    webhook_queue: str = Field("tidings-webhooks.sqlite3", min_length=1)
    webhook_timeout: float = Field(5.0, gt=0, le=300)
    webhook_retry_for: float = Field(600.0, ge=0)
    webhook_batch_delay: float = Field(0.05, ge=0, le=60)
    webhook_vacated_delay: float = Field(3.0, ge=0, le=600)
    reuse_port: bool = False
    # Mounts the /conformance/echo WebSocket echo for the Autobahn Testsuite
    # (docs/conformance.md); never in production.
    conformance: bool = False
    # The debug console at /console (docs/console.md); console_token logs in to every app.
    console: bool = False
    console_token: str | None = Field(None, min_length=16, max_length=512, repr=False)
    # Signs console sessions; `--workers` gives its workers one, so a login is good on
    # every worker. Random per process when unset.
    console_session_key: str | None = Field(None, min_length=32, max_length=512, repr=False)
    apps: tuple[AppSettings, ...] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # TIDINGS_TRUSTED_PROXIES and --trusted-proxies give one string: "10.0.0.0/8,::1".
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(proxies)  # raises ValueError naming the bad entry
        return proxies

    @field_validator("apps")
    @classmethod
    def _unique(cls, apps: tuple[AppSettings, ...]) -> tuple[AppSettings, ...]:
        for attribute in ("id", "key"):
            seen: set[str] = set()
            for app in apps:
                value = getattr(app, attribute)
                if value in seen:
                    raise ValueError(f"two apps have the {attribute} {value!r}")
                seen.add(value)
        return apps

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"setting {name}: file {path!r} not found")
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_redis(cls, raw: Any) -> Any:
        """``redis_cluster`` becomes ``redis`` as a ``redis+cluster://`` URL: one setting
        says whether and how Redis is used (``brokers/redis/connect.py``)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("redis_cluster"), str):
            return raw
        scheme, separator, rest = raw["redis_cluster"].partition("://")
        if not separator or scheme not in ("redis", "rediss"):
            return raw  # the field's own check names the bad value
        url = f"{scheme}+cluster://{rest}"
        if raw.get("redis") not in (None, url):
            raise ValueError("redis and redis_cluster both given: give one of them")
        return {**raw, "redis": url}

    @model_validator(mode="after")
    def _workers_need_redis(self) -> Settings:
        if self.workers > 1 and not self.redis:
            raise ValueError(
                f"workers = {self.workers} needs redis: in-memory state cannot be shared "
                "between worker processes (add --redis redis://HOST:PORT/0)"
            )
        return self

    @property
    def uses_dev_app(self) -> bool:
        return any(a.key == DEV_APP["key"] and a.secret == DEV_APP["secret"] for a in self.apps)


SERVER_FIELDS = tuple(name for name in Settings.model_fields if name != "apps")
# Set by `--workers` for its worker processes.
INTERNAL_FIELDS = ("reuse_port", "console_session_key")


def parse_app_spec(spec: str) -> dict[str, str]:
    """``ID:KEY:SECRET`` (the secret may itself contain ``:``)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not all(parts):
        # Never echo the spec: whatever part is there may be (part of) a secret.
        raise ConfigError("invalid app: expected ID:KEY:SECRET (value not shown)")
    return {"id": parts[0], "key": parts[1], "secret": parts[2]}


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def load_settings(
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge file, environment and flags into validated :class:`Settings`."""
    env = os.environ if env is None else env
    flags = flags or {}
    if config is None and env.get("TIDINGS_CONFIG"):
        config = Path(env["TIDINGS_CONFIG"])
    raw: dict[str, Any] = load_toml(config) if config is not None else {}
    for name in SERVER_FIELDS:
        value = env.get(f"TIDINGS_{name.upper()}")
        if value is not None and value != "":
            raw[name] = value
    if env.get("TIDINGS_APPS"):
        raw["apps"] = [
            parse_app_spec(s.strip()) for s in env["TIDINGS_APPS"].split(",") if s.strip()
        ]
    for name, value in flags.items():
        if value is None or value == ():
            continue  # not given on the command line
        if value is False and Settings.model_fields[name].default is not True:
            continue  # an on-flag not given; only a --no-<name> of an on-by-default setting
            # (--no-lean-rest) switches a setting off
        if name == "apps":
            raw["apps"] = [parse_app_spec(s) for s in value]
        else:
            raw[name] = value
    if not raw.get("apps"):
        raw["apps"] = [DEV_APP]
    return validate_settings(raw)


def validate_settings(raw: Mapping[str, Any]) -> Settings:
    """:class:`Settings` from plain values (``Realtime(...)``'s keyword arguments, a merged
    file): a bad value raises :class:`ConfigError` naming it."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw)) from None


# Fields whose value an error may quote, URLs without user info, query or fragment. Never
# quoted: secrets, webhook headers (credentials are their usual content), unknown fields (a
# misspelt "secret"), list items and whole tables.
URL_FIELDS = frozenset({"url", "redis", "redis_cluster", "live_snapshot_url"})
HIDDEN_FIELDS = frozenset({"secret", "headers", "console_token", "console_session_key"})
QUOTABLE_FIELDS = (
    (
        frozenset(Settings.model_fields)
        | frozenset(AppSettings.model_fields)
        | frozenset(AppWebhookSettings.model_fields)
        | frozenset(WebhookFilter.model_fields)
        | frozenset(AppHistorySettings.model_fields)
    )
    - HIDDEN_FIELDS
    - {"apps", "webhooks", "filter", "history"}
)


def _shown_value(loc: tuple[int | str, ...], kind: str, value: object) -> str:
    """How an error shows the value it refused: never anything that may be a credential."""
    if not loc:
        return ""  # a rule across settings: its message names what it needs to
    field = loc[-1]
    if kind == "extra_forbidden" or any(part in HIDDEN_FIELDS for part in loc):
        return " (value not shown)"
    if field in URL_FIELDS and isinstance(value, str):
        shown = public_url(value)
        return " (value not shown)" if shown == UNPARSABLE else f" (got {shown!r})"
    if field in QUOTABLE_FIELDS and isinstance(value, str | int | float | bool):
        return f" (got {value!r})"
    return " (value not shown)"


def _describe(exc: ValidationError, raw: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if location.startswith("apps."):
            index = error["loc"][1]
            apps = raw.get("apps") or []
            if isinstance(index, int) and index < len(apps) and isinstance(apps[index], dict):
                app_id = apps[index].get("id", index)
                location = f"apps[{app_id}]." + ".".join(str(p) for p in error["loc"][2:])
        shown = _shown_value(error["loc"], error["type"], error.get("input"))
        if not location:  # a rule across settings; its message names them
            lines.append(str(error["msg"]).removeprefix("Value error, "))
        elif error["type"] == "missing":
            lines.append(f"setting {location}: required but missing")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"setting {location}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
