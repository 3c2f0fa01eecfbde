"""Credentials never reach the output of `tidings check-config` and `tidings serve`.

Every config here holds secrets where operators put them: an app secret, a webhook URL with
user info, a ``?token=`` and a fragment, an ``Authorization`` header, a Redis URL with a
password. Each test runs the real command in a child process and searches everything it
wrote, for valid and invalid configs alike.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pusher_helpers import TIMEOUT, SocketOpener, unique

from redis_server import RedisServer
from server_process import ServerProcess, free_port, toml_value

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

APP_SECRET = "app-secret-S3CRET"
HOOK_USER = "hook-user-S3CRET"
HOOK_PASSWORD = "hook-pass-S3CRET"
HOOK_TOKEN = "hook-token-S3CRET"
HOOK_FRAGMENT = "hook-fragment-S3CRET"
HEADER_VALUE = "Bearer header-S3CRET"
API_KEY = "api-key-S3CRET"
REDIS_PASSWORD = "redis-pass-S3CRET"
SECRETS = (
    APP_SECRET,
    HOOK_USER,
    HOOK_PASSWORD,
    HOOK_TOKEN,
    HOOK_FRAGMENT,
    HEADER_VALUE,
    "header-S3CRET",
    API_KEY,
    REDIS_PASSWORD,
)


def hook_url(
    port: int = 443, scheme: str = "https", host: str = "example.com", user: bool = True
) -> str:
    userinfo = f"{HOOK_USER}:{HOOK_PASSWORD}@" if user else ""
    return f"{scheme}://{userinfo}{host}:{port}/hook?token={HOOK_TOKEN}#{HOOK_FRAGMENT}"


def config_text(
    *,
    webhook: dict[str, Any] | None = None,
    app: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    hook_at: dict[str, Any] | None = None,
) -> str:
    """A TOML config: ``settings``, then one app with two webhooks, all holding secrets.

    The first webhook has user info in its URL and an API key header (``webhook`` changes
    it); the second an ``Authorization`` header (aiohttp takes one or the other). Both
    URLs have a token and a fragment; ``hook_at`` (``hook_url`` arguments) says where.
    """
    where = hook_at or {}
    first = {"url": hook_url(**where), "headers": {"X-Api-Key": API_KEY}, **(webhook or {})}
    second = {
        "url": hook_url(**where, user=False),
        "headers": {"Authorization": HEADER_VALUE},
        "event_types": ["channel_occupied"],
    }
    entry = {"id": "1", "key": "key-1", "secret": APP_SECRET, **(app or {})}
    entry["webhooks"] = [first, second]
    lines = [f"{k} = {toml_value(v)}" for k, v in (settings or {}).items()]
    lines += ["", "[[apps]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items())]
    return "\n".join(lines) + "\n"


def assert_no_secret(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} shown:\n{output}"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
        cwd=cwd,
    )


# --- invalid configs: the error names the setting, never the credential -----------------

REDIS_URL = f"redis://tidings:{REDIS_PASSWORD}@127.0.0.1:6379/0"

INVALID: dict[str, tuple[str, str]] = {
    # A bad field next to the webhook URL and its header.
    "webhook-unknown-field": (config_text(webhook={"retries": 3}), "webhooks.0.retries"),
    "webhook-bad-event-type": (
        config_text(webhook={"event_types": ["nope"]}),
        "webhooks.0.event_types",
    ),
    # The URL itself is bad: shown without user info, query and fragment, or not at all.
    "webhook-url-scheme": (
        config_text(webhook={"url": hook_url(443, scheme="ftp")}),
        "webhooks.0.url",
    ),
    "webhook-url-port": (config_text(webhook={"url": hook_url(99999)}), "webhooks.0.url"),
    "webhook-headers-not-a-table": (
        config_text(webhook={"headers": f"Authorization: {HEADER_VALUE}"}),
        "webhooks.0.headers",
    ),
    "webhook-header-not-a-string": (
        config_text(webhook={"headers": {"Authorization": [HEADER_VALUE]}}),
        "headers.authorization",
    ),
    "webhook-header-line-break": (
        config_text(webhook={"headers": {"X-Api-Key": f"{API_KEY}\r\nX-Evil: 1"}}),
        "header x-api-key holds a line break",
    ),
    "webhook-url-credentials-and-authorization-header": (
        config_text(webhook={"headers": {"Authorization": HEADER_VALUE}}),
        "authorization header cannot go together",
    ),
    # A misspelt secret, a secret that is too long.
    "app-misspelt-secret": (config_text(app={"secrte": APP_SECRET}), "secrte"),
    "app-secret-too-long": (config_text(app={"secret": APP_SECRET * 30}), "secret"),
    # Redis URLs: a bad scheme next to a password, and a valid one next to a bad setting.
    "redis-bad-scheme": (
        config_text(settings={"redis": f"http://tidings:{REDIS_PASSWORD}@127.0.0.1:6379/0"}),
        "setting redis",
    ),
    "redis-next-to-bad-setting": (
        config_text(settings={"redis": REDIS_URL, "workers": 0}),
        "setting workers",
    ),
    # TOML that does not parse, on the line of a secret.
    "toml-unterminated-url": (
        config_text().replace(f"#{HOOK_FRAGMENT}", f"#{HOOK_FRAGMENT}\n", 1),
        "not valid toml",
    ),
    "toml-bare-secret": (
        config_text().replace(f'"{APP_SECRET}"', APP_SECRET, 1),
        "not valid toml",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_invalid_config_errors_show_no_credentials(tmp_path: Path, case: str, command: str) -> None:
    text, names = INVALID[case]
    for secret in (HOOK_TOKEN, HEADER_VALUE, APP_SECRET):
        assert secret in text, case  # the secrets are there to be leaked
    config = tmp_path / "tidings.toml"
    config.write_text(text)
    args = [str(config)] if command == "check-config" else ["--config", str(config)]
    if command == "serve":
        args += ["--host", "127.0.0.1", "--port", str(free_port())]
    result = run(command, *args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, (result.returncode, output)
    assert names in output.lower(), output  # the error still says what is wrong
    assert "traceback" not in output.lower(), output
    assert_no_secret(output)


def test_check_config_of_a_valid_config_shows_no_credentials(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(config_text(settings={"redis": REDIS_URL}))
    result = run("check-config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout, result.stdout
    assert_no_secret(result.stdout + result.stderr)


# --- a running server: webhook delivery failures and Redis ------------------------------


@pytest.fixture
def redis_user(redis_server: RedisServer) -> Iterator[str]:
    """A Redis URL whose user has a password (an ACL user of the shared redis-server)."""
    name = f"tidings-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", name, "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all")
    try:
        yield f"redis://{name}:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        admin.close()


def webhook_failures(output: str) -> list[str]:
    """The messages of the "webhook ... failed" warnings in a JSON log."""
    messages = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [
        m["message"]
        for m in messages
        if m["logger"] == "tidings.webhooks" and "failed" in m["message"]
    ]


async def test_webhook_delivery_failures_log_no_credentials(
    tmp_path: Path, open_socket: SocketOpener, redis_user: str, redis_prefix: str
) -> None:
    """Webhooks at a closed local port with user info, a token and headers fail to
    deliver; the warnings name the URL by scheme, host, port and path only."""
    closed = free_port()  # nothing listens there: every attempt is refused
    config = tmp_path / "tidings.toml"
    config.write_text(
        config_text(
            hook_at={"port": closed, "scheme": "http", "host": "127.0.0.1"},
            settings={
                "redis": redis_user,
                "redis_prefix": redis_prefix,
                "log_level": "debug",
                "log_format": "json",
                "webhook_batch_delay": 0,
            },
        )
    )
    server = ServerProcess(free_port(), config, tmp_path / "server.log", cwd=tmp_path)
    await server.astart()
    try:
        sock = await open_socket(server.ws_url, "key-1")
        await sock.subscribe(unique("occupied"))  # fires channel_occupied
        deadline = time.monotonic() + 4 * TIMEOUT
        while len(failures := webhook_failures(server.logs())) < 2:
            assert time.monotonic() < deadline, server.logs()
            await asyncio.sleep(0.05)
        for failure in failures:
            assert f"webhook http://127.0.0.1:{closed}/hook (app 1) failed" in failure, failure
    finally:
        server.stop()
    assert_no_secret(server.logs())
