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
from tidings.cli_options import setting_options
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
@setting_options
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
