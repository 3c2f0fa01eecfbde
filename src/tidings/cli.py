"""``tidings serve`` and ``tidings check-config``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from tidings import __version__, logs
from tidings.config import ConfigError, Settings, load_settings
from tidings.server.workers import WORKER_SETTINGS_ENV

log = logging.getLogger("tidings")

DEV_WARNING = """
*****************************************************************************
  tidings is running with the built-in DEVELOPMENT app:
      app id 12345, key app-key, secret app-secret
  Anyone who knows these public values can publish and sign subscriptions.
  Configure your own apps (--app ID:KEY:SECRET, TIDINGS_APPS or a config file)
  before exposing this server.
*****************************************************************************"""


def _setup_logging(settings: Settings) -> None:
    logs.setup(settings.log_level, settings.log_format)
    if settings.debug:
        # Our own debug lines only, not those of asyncio, aiohttp or redis-py.
        logging.getLogger("tidings").setLevel(logging.DEBUG)


def _fail(message: str) -> None:
    click.echo(f"tidings: {message}", err=True)
    sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="tidings")
def main() -> None:
    """Tidings: a Pusher Channels protocol server for Python."""


@main.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML config file (env TIDINGS_CONFIG).",
)
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", default=None, help="Port to listen on, 0 for any [6001].")
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="ID:KEY:SECRET",
    help="An app (repeatable); replaces apps from the file and TIDINGS_APPS.",
)
@click.option("--activity-timeout", default=None, help="Seconds of silence before a ping [120].")
@click.option("--pong-timeout", default=None, help="Seconds to wait for the pong [30].")
@click.option("--max-connections", default=None, help="Connections per node [100000].")
@click.option(
    "--max-connection-rate",
    default=None,
    help="New connections per second per node, 0 for no limit; past it HTTP 503 [10000].",
)
@click.option(
    "--max-write-buffer",
    default=None,
    help="Bytes unsent to one socket before it is closed as a slow consumer [1048576].",
)
@click.option("--max-request-body", default=None, help="REST body limit in bytes [262144].")
@click.option(
    "--request-header-timeout",
    default=None,
    help="Seconds from accept until a request's headers are complete [20].",
)
@click.option(
    "--request-body-timeout",
    default=None,
    help="Seconds from the headers until a request's body is complete [30].",
)
@click.option(
    "--keepalive-timeout",
    default=None,
    help="Seconds an HTTP keep-alive connection may wait for its next request [75].",
)
@click.option(
    "--max-pending-connections",
    default=None,
    help="Connections still sending their request; past it the oldest is closed [4096].",
)
@click.option(
    "--max-connections-per-ip",
    default=None,
    help="Open connections per client address, 0 for no limit [0].",
)
@click.option(
    "--trusted-proxies",
    default=None,
    metavar="CIDR,...",
    help="Proxies whose --client-ip-header names the client (comma-separated) [none].",
)
@click.option(
    "--client-ip-header",
    default=None,
    help="Header naming the client behind a trusted proxy [X-Forwarded-For].",
)
@click.option("--shutdown-timeout", default=None, help="Seconds to finish requests on stop [10].")
@click.option(
    "--shutdown-ready-delay",
    default=None,
    help="Seconds /ready answers 503 on stop before sockets are closed [2].",
)
@click.option("--log-level", default=None, help="debug, info, warning or error [info].")
@click.option(
    "--debug",
    is_flag=True,
    default=None,
    help="Log every connection, subscription, client event and REST call (env TIDINGS_DEBUG).",
)
@click.option(
    "--tls-cert", default=None, help="PEM certificate (chain): serve wss:// and https://."
)
@click.option("--tls-key", default=None, help="PEM private key of --tls-cert.")
@click.option(
    "--log-format", default=None, help="auto (text on a terminal, else json), json or text."
)
@click.option("--http-path", default=None, help="Path prefix of the HTTP fallbacks [/pusher].")
@click.option(
    "--http-session-timeout",
    default=None,
    help="Seconds an HTTP fallback session lives without a request [10].",
)
@click.option(
    "--http-unconfirmed-timeout",
    default=None,
    help="Seconds an HTTP fallback session waits for its first receive request [5].",
)
@click.option(
    "--http-max-unconfirmed",
    default=None,
    help="HTTP fallback sessions per node opened but not yet received from [10000].",
)
@click.option(
    "--http-bind-ip",
    default=None,
    is_flag=True,
    help="Refuse HTTP fallback requests from another address than the session's opener.",
)
@click.option(
    "--redis",
    default=None,
    metavar="URL",
    help="Redis URL for scale-out, e.g. redis://127.0.0.1:6379/0 [memory broker].",
)
@click.option("--redis-prefix", default=None, help="Prefix of every Redis key [tidings].")
@click.option(
    "--redis-sharded",
    default=None,
    is_flag=True,
    help="Fan out with Redis 7 sharded pub/sub (SPUBLISH/SSUBSCRIBE).",
)
@click.option(
    "--node-ttl",
    default=None,
    help="Seconds without a heartbeat before a node is declared dead [15].",
)
@click.option(
    "--workers", default=None, help="Processes sharing the port (SO_REUSEPORT); needs --redis [1]."
)
# Test-only: mounts the Autobahn echo endpoint (docs/conformance.md).
@click.option("--conformance", default=None, is_flag=True, hidden=True)
def serve(config: Path | None, **flags: Any) -> None:
    """Start the server (WebSocket, REST API and health checks on one port)."""
    try:
        settings = load_settings(config, flags=flags)
    except ConfigError as exc:
        _fail(str(exc))
        return
    _setup_logging(settings)
    if settings.uses_dev_app:
        log.warning(DEV_WARNING)
    try:
        code = run(settings)
    except ConfigError as exc:  # found only while starting, e.g. the port is taken
        _fail(str(exc))
        return
    sys.exit(code)


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path))
def check_config(path: Path) -> None:
    """Validate a config file without starting the server."""
    try:
        settings = load_settings(path, env={})
    except ConfigError as exc:
        _fail(str(exc))
        return
    click.echo(f"{path}: OK ({len(settings.apps)} app(s), port {settings.port})")


@main.command("worker", hidden=True)
def worker() -> None:
    """One process of `serve --workers N` (settings come from the supervisor)."""
    settings = Settings.model_validate_json(os.environ.pop(WORKER_SETTINGS_ENV))
    _setup_logging(settings)
    try:
        code = run(settings, supervised=True)
    except ConfigError as exc:  # the supervisor stops on status 2 instead of restarting
        _fail(str(exc))
        return
    sys.exit(code)


def run(settings: Settings, *, supervised: bool = False) -> int:
    """Serve until stopped; raises ConfigError if it cannot start (e.g. the port is taken)."""
    if settings.workers > 1:
        from tidings.server.workers import supervise

        return supervise(settings)
    from tidings.server.app import serve as serve_forever

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(serve_forever(settings, supervised=supervised))
    return uvloop.run(serve_forever(settings, supervised=supervised))
