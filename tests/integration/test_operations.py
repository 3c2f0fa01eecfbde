"""Operations against a real `tidings serve`: secrets never leak, log_level, check-config."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    TIMEOUT,
    SocketOpener,
    hmac_hex,
    raw_http,
    rest_request,
    unique,
)

from server_process import ServerProcess, free_port

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

SECRET = "sup3r-s3cret-value-7f1e"
APP = {"id": "4242", "key": "ops-key", "secret": SECRET}


async def test_no_secret_in_logs_metrics_or_error_messages(
    make_server: Any, open_socket: SocketOpener
) -> None:
    app = {**APP, "webhooks": [{"url": "http://127.0.0.1:9/never"}]}
    srv = make_server(apps=[app], log_level="debug", webhook_batch_delay=0.01)
    seen: list[str] = []

    # REST: every kind of authentication failure, and a few other errors.
    creds = {"key": APP["key"], "secret": SECRET}
    path = f"/apps/{APP['id']}/events"
    body = {"name": "e", "channel": "c", "data": "d"}
    for kwargs in (
        {"secret": "wrong"},
        {"signature": "0" * 64},
        {"timestamp": int(time.time()) - 3600},
        {"body_md5": "0" * 32},
        {"key": "other-key"},
    ):
        resp = rest_request(srv.http_url, "POST", path, json_body=body, **{**creds, **kwargs})
        assert resp.status == 401, resp
        seen.append(resp.body.decode())
    for resp in (
        rest_request(srv.http_url, "POST", path, body=b"{not json", **creds),
        rest_request(srv.http_url, "GET", "/apps/4242/nope", **creds),
        rest_request(srv.http_url, "POST", "/apps/1/events", json_body=body, **creds),
    ):
        assert resp.status >= 400, resp
        seen.append(resp.body.decode())

    # WebSocket: bad channel signatures, a forged sign-in, a wrong key.
    sock = await open_socket(srv.ws_url, APP["key"])
    channel = unique("private-x")
    await sock.send_subscribe(channel, f"{APP['key']}:{hmac_hex('guess', channel)}")
    seen.append(json.dumps(await sock.expect("pusher:subscription_error", channel)))
    presence = unique("presence-x")
    await sock.send_subscribe(presence, "bad", '{"user_id":"u"}')
    seen.append(json.dumps(await sock.expect("pusher:subscription_error", presence)))
    await sock.send_event("pusher:signin", {"auth": "ops-key:bad", "user_data": '{"id":"u"}'})
    closed = await sock.wait_closed()
    assert closed.code == 4009, closed
    seen += [json.dumps(m) for m in closed.messages] + [closed.reason]
    wrong = await open_socket(srv.ws_url, "not-ops-key", handshake=False)
    closed = await wrong.wait_closed()
    seen += [json.dumps(m) for m in closed.messages] + [closed.reason]

    # A webhook attempt that fails (logged as a warning).
    occupied = await open_socket(srv.ws_url, APP["key"])
    await occupied.subscribe(unique("occupied"))
    deadline = time.monotonic() + TIMEOUT
    while "failed" not in srv.logs():
        assert time.monotonic() < deadline, srv.logs()
        await asyncio.sleep(0.05)

    metrics = raw_http(srv.http_url, "GET", "/metrics").body.decode()
    assert srv.stop() == 0
    logs = srv.logs()
    assert "4242" in metrics and "webhook" in logs  # the scrape and logs are the real ones
    for where, text in [("metrics", metrics), ("logs", logs), *(("reply", s) for s in seen)]:
        assert SECRET not in text, f"secret in {where}: {text}"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("info", ["listening on"], []),
        ("warning", ["DEVELOPMENT app"], ["listening on"]),
        ("error", [], ["listening on", "DEVELOPMENT app"]),
    ],
)
def test_log_level(tmp_path: Path, level: str, shown: list[str], hidden: list[str]) -> None:
    config = write_config(tmp_path, f'log_level = "{level}"\n')  # the dev app: it warns
    srv = ServerProcess(free_port(), config, tmp_path / "server.log")
    srv.start()
    assert srv.stop() == 0
    logs = srv.logs()
    for text in shown:
        assert text in logs, logs
    for text in hidden:
        assert text not in logs, logs
    for line in logs.splitlines():
        if line.startswith("{"):  # JSON lines (stderr is not a terminal)
            assert json.loads(line)["level"] in ("debug", "info", "warning", "error")


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "TIDINGS_PORT": "not-a-port"}  # env is not read
    return subprocess.run(
        [sys.executable, "-m", "tidings", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
        env=env,
    )


def test_check_config_accepts_a_good_file_without_starting(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(
        tmp_path,
        f"port = {port}\nmax_connection_rate = 50\nshutdown_ready_delay = 5\n\n"
        f'[[apps]]\nid = "1"\nkey = "k"\nsecret = "{SECRET}"\n',
    )
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "1 app(s)" in result.stdout, result.stdout
    assert SECRET not in result.stdout + result.stderr
    # It did not start: the port is still free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("max_connection_rate = -1\n", ["max_connection_rate", "-1"]),
        ('shutdown_ready_delay = "soon"\n', ["shutdown_ready_delay", "soon"]),
        ('log_level = "loud"\n', ["log_level", "loud"]),
        ("port = 70000\n", ["port", "70000"]),
        ('[[apps]]\nid = "1"\nkey = "k"\nsecret = ""\n', ["secret"]),
        ("not toml at all = = =\n", ["not valid toml"]),
    ],
)
def test_check_config_reports_errors_without_starting(
    tmp_path: Path, text: str, mentions: list[str]
) -> None:
    result = check_config(write_config(tmp_path, text))
    assert result.returncode == 2, (result.stdout, result.stderr)
    for word in mentions:
        assert word in result.stderr.lower(), result.stderr
    assert "traceback" not in result.stderr.lower()
    assert "listening" not in result.stdout + result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.toml")
    assert result.returncode == 2 and "not found" in result.stderr, result.stderr
