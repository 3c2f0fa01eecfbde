"""Configuration from flags, environment variables and a TOML file, as `tidings serve` sees it.

Each test runs its own `python -m tidings serve` child with a clean environment (no inherited
TIDINGS_* variables) so that only the configuration under test applies.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pusher
import pytest
from pusher_helpers import TIMEOUT, SocketOpener, unique
from webhook_helpers import (
    APP_KEY,
    Receiver,
    app_config,
    webhook_settings,
    write_webhook_config,
)

from redis_server import RedisServer
from tidings.config import INTERNAL_FIELDS, Settings

pytestmark = pytest.mark.timeout(12 * TIMEOUT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["TIDINGS_SHUTDOWN_READY_DELAY"] = "0"  # stop at once (no load balancer here)
    env.update(extra)
    return env


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidings", "serve", *args]


@dataclass
class Running:
    port: int
    output: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@contextmanager
def running(args: list[str], env: dict[str, str], port: int, tmp: Path) -> Iterator[Running]:
    """Start `tidings serve`, wait for /ready on ``port``, stop it with SIGTERM afterwards."""
    output = tmp / "output.log"
    with output.open("wb") as log:
        proc = subprocess.Popen(
            serve_command(*args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp
        )
    try:
        deadline = time.monotonic() + 4 * TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}:\n{output.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"never became ready:\n{output.read_text()}")
            time.sleep(0.05)
        yield Running(port, output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3 * TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=TIMEOUT)


def run_to_exit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(*args), capture_output=True, text=True, env=env, timeout=3 * TIMEOUT
    )


# --- bad values stop start-up with exit code 2 -------------------------------------------


@dataclass(frozen=True)
class BadConfig:
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    toml: str | None = None
    mentions: tuple[str, ...] = ()  # lower-cased words stderr must contain


BAD_CONFIGS: dict[str, BadConfig] = {
    "flag-port-not-a-number": BadConfig(("--port", "abc"), mentions=("port", "abc")),
    "flag-port-out-of-range": BadConfig(("--port", "70000"), mentions=("port", "70000")),
    "flag-activity-timeout": BadConfig(
        ("--activity-timeout", "soon"), mentions=("activity", "soon")
    ),
    "flag-app-empty-secret": BadConfig(("--app", "1:key:"), mentions=("secret",)),
    # A malformed app spec may hold a secret, so the server names the expected form instead
    # of echoing the value.
    "flag-app-malformed": BadConfig(("--app", "justone"), mentions=("app", "id:key:secret")),
    "flag-app-duplicate-key": BadConfig(
        ("--app", "1:dupkey:s1", "--app", "2:dupkey:s2"), mentions=("key", "dupkey")
    ),
    "env-port": BadConfig(env=(("TIDINGS_PORT", "abc"),), mentions=("port", "abc")),
    "env-apps": BadConfig(env=(("TIDINGS_APPS", "1:onlykey"),), mentions=("app", "id:key:secret")),
    "env-activity-timeout": BadConfig(
        env=(("TIDINGS_ACTIVITY_TIMEOUT", "soon"),), mentions=("activity", "soon")
    ),
    "toml-port-string": BadConfig(toml='port = "abc"\n', mentions=("port", "abc")),
    "toml-port-out-of-range": BadConfig(toml="port = 70000\n", mentions=("port", "70000")),
    "toml-app-empty-secret": BadConfig(
        toml='[[apps]]\nid = "1"\nkey = "k"\nsecret = ""\n', mentions=("secret",)
    ),
    "toml-app-setting": BadConfig(
        toml='[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nmax_connections = "lots"\n',
        mentions=("max_connections", "lots"),
    ),
    "toml-duplicate-key": BadConfig(
        toml=(
            '[[apps]]\nid = "1"\nkey = "same"\nsecret = "s"\n'
            '[[apps]]\nid = "2"\nkey = "same"\nsecret = "t"\n'
        ),
        mentions=("key", "same"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_value_exits_2_naming_setting_and_value(case: str, tmp_path: Path) -> None:
    bad = BAD_CONFIGS[case]
    args = ["--host", "127.0.0.1", *bad.args]
    if "--port" not in bad.args and not bad.env and bad.toml is None:
        args += ["--port", str(free_port())]
    if bad.toml is not None:
        config = tmp_path / "tidings.toml"
        config.write_text(bad.toml)
        args += ["--config", str(config)]
    env = clean_env(**dict(bad.env))
    if "TIDINGS_PORT" not in env and "port" not in (bad.toml or ""):
        env["TIDINGS_PORT"] = str(free_port())
    result = run_to_exit(args, env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    stderr = result.stderr.lower()
    for word in bad.mentions:
        assert word in stderr, f"{word!r} not named in stderr: {result.stderr}"
    assert "traceback" not in stderr, result.stderr


# --- a port already taken is a configuration error too ----------------------------------


@contextmanager
def occupied_port() -> Iterator[int]:
    """A 127.0.0.1 port with another process's listener on it (plain, no SO_REUSEPORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_port_in_use_exits_2_with_one_line(
    workers: list[str], redis_server: RedisServer, tmp_path: Path
) -> None:
    with occupied_port() as port:
        args = ["--port", str(port), "--redis", redis_server.url, "--app", "1:key:secret"]
        result = run_to_exit([*args, *workers], clean_env(TIDINGS_LOG_LEVEL="warning"))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tidings: "), result.stderr
    assert f"127.0.0.1:{port}" in lines[0], result.stderr
    assert "--port" in lines[0] and "TIDINGS_PORT" in lines[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --- each configuration source works -----------------------------------------------------


async def assert_app_connects(
    open_socket: SocketOpener, ws_url: str, key: str, activity_timeout: int | None = None
) -> None:
    sock = await open_socket(ws_url, key)
    if activity_timeout is not None:
        assert sock.activity_timeout == activity_timeout, sock.established
    await sock.ping()


async def assert_key_refused(open_socket: SocketOpener, ws_url: str, key: str) -> None:
    sock = await open_socket(ws_url, key, handshake=False)
    error = await sock.recv(ignore=())
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4001, error
    assert (await sock.wait_closed()).code == 4001


def assert_rest_works(port: int, app_id: str, key: str, secret: str) -> None:
    client = pusher.Pusher(
        app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=port, ssl=False
    )
    try:
        assert client.trigger("some-channel", "e", "d") == {}
    finally:
        client._pusher_client.http.session.close()
        client._authentication_client.http.session.close()


async def test_environment_variables(tmp_path: Path, open_socket: SocketOpener) -> None:
    port = free_port()
    env = clean_env(
        TIDINGS_HOST="127.0.0.1",
        TIDINGS_PORT=str(port),
        TIDINGS_APPS="777:env-key:env-secret,778:env-key-2:env-secret-2",
        TIDINGS_ACTIVITY_TIMEOUT="42",
    )
    with running([], env, port, tmp_path) as srv:
        await assert_app_connects(open_socket, srv.ws_url, "env-key", activity_timeout=42)
        await assert_app_connects(open_socket, srv.ws_url, "env-key-2")
        await assert_key_refused(open_socket, srv.ws_url, "app-key")  # no dev app
        assert_rest_works(port, "778", "env-key-2", "env-secret-2")


async def test_command_line_flags(tmp_path: Path, open_socket: SocketOpener) -> None:
    port = free_port()
    args = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--app",
        "888:flag-key:flag-secret",
        "--app",
        "889:flag-key-2:flag-secret-2",
        "--activity-timeout",
        "33",
    ]
    with running(args, clean_env(), port, tmp_path) as srv:
        await assert_app_connects(open_socket, srv.ws_url, "flag-key", activity_timeout=33)
        await assert_app_connects(open_socket, srv.ws_url, "flag-key-2")
        await assert_key_refused(open_socket, srv.ws_url, "app-key")
        assert_rest_works(port, "888", "flag-key", "flag-secret")


async def test_toml_file(tmp_path: Path, open_socket: SocketOpener) -> None:
    port = free_port()
    config = tmp_path / "tidings.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = {port}\nactivity_timeout = 44\n\n'
        '[[apps]]\nid = "999"\nkey = "toml-key"\nsecret = "toml-secret"\n'
        "client_events = false\n"
    )
    with running(["--config", str(config)], clean_env(), port, tmp_path) as srv:
        await assert_app_connects(open_socket, srv.ws_url, "toml-key", activity_timeout=44)
        await assert_key_refused(open_socket, srv.ws_url, "app-key")
        assert_rest_works(port, "999", "toml-key", "toml-secret")


async def test_config_file_from_environment(tmp_path: Path, open_socket: SocketOpener) -> None:
    port = free_port()
    config = tmp_path / "tidings.toml"
    config.write_text('[[apps]]\nid = "555"\nkey = "cfg-env-key"\nsecret = "s"\n')
    env = clean_env(TIDINGS_CONFIG=str(config), TIDINGS_PORT=str(port))
    with running(["--host", "127.0.0.1"], env, port, tmp_path) as srv:
        await assert_app_connects(open_socket, srv.ws_url, "cfg-env-key")


async def test_no_apps_warns_loudly_about_the_dev_app(
    tmp_path: Path, open_socket: SocketOpener
) -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port)]
    with running(args, clean_env(), port, tmp_path) as srv:
        await assert_app_connects(open_socket, srv.ws_url, "app-key")
        assert_rest_works(port, "12345", "app-key", "app-secret")
        output = srv.text()
    for needle in ("12345", "app-key", "app-secret"):
        assert needle in output, output
    assert "warn" in output.lower(), output


# --- the start-up banner -------------------------------------------------------------------

PUSHER_HINT = re.compile(
    r"stop with Ctrl-C.*new Pusher\('(?P<key>[^']*)', \{wsHost: '(?P<host>[^']*)', "
    r"wsPort: (?P<port>\d+), forceTLS: false"
)


async def test_banner_says_how_to_stop_and_where_pusher_js_connects(
    tmp_path: Path, open_socket: SocketOpener
) -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--app", "31:banner-key:banner-secret"]
    with running(args, clean_env(), port, tmp_path) as srv:
        output = srv.text()
        hint = PUSHER_HINT.search(output)
        assert hint is not None, output
        # What the banner says is enough to connect.
        ws_url = f"ws://{hint['host']}:{hint['port']}"
        await assert_app_connects(open_socket, ws_url, hint["key"])
    assert hint["key"] == "banner-key"
    assert int(hint["port"]) == port
    assert "banner-secret" not in output


async def test_banner_names_no_key_when_there_are_several_apps(tmp_path: Path) -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--app", "1:k1:s1", "--app", "2:k2:s2"]
    with running(args, clean_env(), port, tmp_path) as srv:
        output = srv.text()
    hint = PUSHER_HINT.search(output)
    assert hint is not None, output
    assert hint["key"] == "<app key>"


# --- every setting is a flag ---------------------------------------------------------------


def help_entry(help_text: str, flag: str, env: str) -> re.Match[str] | None:
    """``--flag [METAVAR] description [env var: ENV]`` in whitespace-normalised help."""
    not_next_env = r"(?:(?!\[env var:).)*?"
    pattern = rf"{re.escape(flag)}(?: (?P<metavar>[A-Z|a-z,.:]+))?\s{not_next_env}"
    return re.search(pattern + rf"\[env var: {re.escape(env)}\]", help_text)


def test_serve_help_lists_every_setting_with_its_variable_and_type() -> None:
    result = subprocess.run(
        serve_command("--help"), capture_output=True, text=True, env=clean_env(), timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name, info in Settings.model_fields.items():
        if name in INTERNAL_FIELDS or name == "conformance":
            continue
        flag = "--app" if name == "apps" else "--" + name.replace("_", "-")
        entry = help_entry(text, flag, f"TIDINGS_{name.upper()}")
        assert entry is not None, f"{flag} or TIDINGS_{name.upper()} missing:\n{result.stdout}"
        if info.annotation is not bool:
            assert entry["metavar"], f"{flag} shows no type:\n{result.stdout}"
        if info.annotation is float:
            assert entry["metavar"] == "SECONDS", entry.group(0)


async def test_webhook_timeout_flag_overrides_the_file(
    tmp_path: Path, open_socket: SocketOpener
) -> None:
    # The file allows 300 s per webhook request, the flag 0.5 s: a receiver that never
    # answers in time is given up on (and logged as failing) only if the flag took effect.
    receiver = Receiver(delay=12 * TIMEOUT)
    receiver.start()
    try:
        port = free_port()
        config = write_webhook_config(
            tmp_path / "tidings.toml",
            webhook_settings(tmp_path, host="127.0.0.1", port=port, webhook_timeout=300),
            [app_config({"url": receiver.url(), "event_types": ["channel_occupied"]})],
        )
        args = ["--config", str(config), "--webhook-timeout", "0.5"]
        with running(args, clean_env(), port, tmp_path) as srv:
            sock = await open_socket(srv.ws_url, APP_KEY)
            await sock.subscribe(unique("occupied"))
            deadline = time.monotonic() + 4 * TIMEOUT
            while not re.search(r"webhook .* failed: .*retrying", srv.text()):
                assert time.monotonic() < deadline, f"no webhook timeout:\n{srv.text()}"
                await asyncio.sleep(0.05)
        assert receiver.requests >= 1
    finally:
        receiver.stop()
