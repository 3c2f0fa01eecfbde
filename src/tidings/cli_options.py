"""``tidings serve``'s flags: one per field of :class:`Settings`, generated from the model.

Generated so that every setting has its ``--<setting>`` flag (tests/unit/test_cli_options.py
keeps it so) and its help shows the default of the model, never a copy that drifts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import click
from pydantic.fields import FieldInfo

from tidings.config import INTERNAL_FIELDS, Settings

F = TypeVar("F", bound=Callable[..., Any])

# One line per setting; the default is appended from the model. A new field of Settings
# without an entry here fails at import, so no setting can lack a flag.
FLAG_HELP: dict[str, str] = {
    "host": "Address to listen on (0.0.0.0 for every interface).",
    "port": "Port to listen on, 0 for any.",
    "activity_timeout": "Silence before the server pings a client.",
    "pong_timeout": "Time a client has to answer that ping.",
    "max_connections": "Connections per node; past it new ones are closed with 4100.",
    "max_connection_rate": "New connections per second per node, 0 for no limit; past it 503.",
    "max_write_buffer": "Unsent to one socket before it is closed as a slow consumer.",
    "websocket_engine": "What reads WebSockets after the handshake: tidings or aiohttp.",
    "max_request_body": "REST request body limit.",
    "lean_rest": "Answer signed POSTs to /apps/{id}/events and /batch_events, and admitted "
    "WebSocket upgrades, without aiohttp (faster; everything else still goes to aiohttp).",
    "shutdown_timeout": "Time to finish in-flight requests on stop.",
    "request_header_timeout": "From accept until a request's headers are complete.",
    "request_body_timeout": "From the headers until a request's body is complete.",
    "keepalive_timeout": "An HTTP keep-alive connection may wait this long for its next request.",
    "max_pending_connections": "Connections still sending their request; past it the oldest "
    "is closed.",
    "max_connections_per_ip": "Open connections per client address, 0 for no limit.",
    "trusted_proxies": "Proxies whose --client-ip-header names the client (comma-separated).",
    "client_ip_header": "Header naming the client behind a trusted proxy.",
    "shutdown_ready_delay": "/ready answers 503 this long on stop before sockets are closed.",
    "log_level": "Log level.",
    "debug": "Log every connection, subscription, client event and REST call.",
    "log_format": "auto: text on a terminal, else json.",
    "tls_cert": "PEM certificate (chain): serve wss:// and https://.",
    "tls_key": "PEM private key of --tls-cert.",
    "http_path": "Path prefix of the HTTP fallbacks.",
    "http_session_timeout": "An HTTP fallback session lives this long without a request.",
    "http_unconfirmed_timeout": "An HTTP fallback session waits this long for its first "
    "receive request.",
    "http_max_unconfirmed": "HTTP fallback sessions per node opened but not yet received from.",
    "http_bind_ip": "Refuse HTTP fallback requests from another address than the opener's.",
    "http_send_order_wait": "With Redis: an HTTP fallback send waits up to this long for an "
    "earlier one of its client relayed through another node (0: arrival order).",
    "sse_ping_interval": "A Server-Sent Events stream quiet this long gets a ping comment.",
    "history_check_interval": "How often a node checks that it lost no channel's last "
    "publication (channels with history that spoke lately).",
    "redis": "Redis URL for scale-out, e.g. redis://127.0.0.1:6379/0; none: in-memory broker.",
    "redis_cluster": "Redis Cluster node URL, e.g. redis://10.0.0.5:7000 (keys hash-tagged, "
    "sharded pub/sub); the same as --redis redis+cluster://10.0.0.5:7000.",
    "redis_prefix": "Prefix of every Redis key.",
    "redis_sharded": "Fan out with Redis 7 sharded pub/sub (SPUBLISH/SSUBSCRIBE).",
    "node_ttl": "Time without a heartbeat before a node is declared dead.",
    "workers": "Processes sharing the port (SO_REUSEPORT); needs --redis.",
    "webhook_queue": "SQLite file of the durable webhook queue (Redis holds it with --redis).",
    "webhook_timeout": "Time per webhook request.",
    "webhook_retry_for": "An undelivered webhook batch is retried this long, then dropped.",
    "webhook_batch_delay": "Events this close together go in one webhook request.",
    "webhook_vacated_delay": "channel_vacated/member_removed wait this long for a reconnect.",
    # Mounts the Autobahn echo endpoint (docs/conformance.md); hidden from --help.
    "conformance": "Test only: the WebSocket echo endpoint for the Autobahn Testsuite.",
    "console": "Serve the debug console at /console (docs/console.md).",
    "console_token": "Operator token (16+ characters) that logs in to every app of the "
    "console; prefer the variable, a flag shows in the process list.",
}
HIDDEN = frozenset({"conformance"})
BYTE_FIELDS = frozenset({"max_write_buffer", "max_request_body"})
METAVARS = {
    "host": "ADDRESS",
    "port": "PORT",
    "trusted_proxies": "CIDR,...",
    "client_ip_header": "HEADER",
    "tls_cert": "PATH",
    "tls_key": "PATH",
    "http_path": "PATH",
    "redis": "URL",
    "redis_cluster": "URL",
    "webhook_queue": "PATH",
    "console_token": "TOKEN",
}


def env_name(field: str) -> str:
    return f"TIDINGS_{field.upper()}"


class SettingOption(click.Option):
    """Shows its ``TIDINGS_*`` variable in --help but leaves reading it to load_settings:
    one place for the precedence (file < environment < flags) and for the error messages."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None


def metavar(name: str, info: FieldInfo) -> str:
    annotation = info.annotation
    if name in METAVARS:
        return METAVARS[name]
    if get_origin(annotation) is Literal:
        return "|".join(str(choice) for choice in get_args(annotation))
    if annotation is float:
        return "SECONDS"  # every float setting is a duration
    if annotation is int:
        return "BYTES" if name in BYTE_FIELDS else "INTEGER"
    return "TEXT"


def shown_default(info: FieldInfo) -> str:
    value = info.default
    if value is None or value == ():
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def setting_option(name: str, info: FieldInfo) -> Callable[[F], F]:
    flag = "--" + name.replace("_", "-")
    common: dict[str, Any] = {
        "cls": SettingOption,
        "default": None,
        "envvar": env_name(name),
        "show_envvar": True,
        "hidden": name in HIDDEN,
    }
    if info.annotation is bool and info.default is True:  # on by default: --no-<name> too
        off = "--no-" + name.replace("_", "-")
        text = f"{FLAG_HELP[name]} [default: on]"
        return click.option(f"{flag}/{off}", name, help=text, **common)
    if info.annotation is bool:  # a flag turns a setting on; off is the default
        return click.option(flag, name, is_flag=True, help=FLAG_HELP[name], **common)
    text = f"{FLAG_HELP[name]} [default: {shown_default(info)}]"
    return click.option(flag, name, metavar=metavar(name, info), help=text, **common)


def setting_options(command: F) -> F:
    """Adds --config, --app and one flag per server setting, in the model's order."""
    decorators: list[Callable[[F], F]] = [
        click.option(
            "--config",
            "config",
            cls=SettingOption,
            type=click.Path(path_type=Path),
            default=None,
            envvar="TIDINGS_CONFIG",
            show_envvar=True,
            help="TOML config file.",
        ),
        click.option(
            "--app",
            "apps",
            cls=SettingOption,
            multiple=True,
            metavar="ID:KEY:SECRET",
            envvar="TIDINGS_APPS",
            show_envvar=True,
            help="An app (repeatable); replaces the apps of the file and of TIDINGS_APPS "
            "(there: comma-separated).",
        ),
    ]
    for name, info in Settings.model_fields.items():
        if name != "apps" and name not in INTERNAL_FIELDS:
            decorators.append(setting_option(name, info))
    for decorate in reversed(decorators):
        command = decorate(command)
    return command
