"""TLS on the one port: wss:// for pusher-js with forceTLS and https:// for the REST API,
with a self-signed certificate made by the test."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pusher
import pytest
from scenario import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, node_binary, unique

from server_process import free_port
from tls_support import self_signed

E2E = Path(__file__).resolve().parent

PUSHER_JS_OVER_TLS = """
const Pusher = require('pusher-js');
const [port, channel] = process.argv.slice(1);
const pusher = new Pusher('app-key', {
  cluster: 'local', wsHost: '127.0.0.1', wssPort: +port, forceTLS: true,
  enabledTransports: ['ws'], enableStats: false,
});
const ch = pusher.subscribe(channel);
ch.bind('pusher:subscription_succeeded', () => console.log(JSON.stringify({ready: true})));
ch.bind('greeting', (data) => {
  console.log(JSON.stringify({event: data, transport: pusher.connection.connection.transport.name,
                              url: pusher.connection.connection.transport.hooks.urls}));
  pusher.disconnect();
  setTimeout(() => process.exit(0), 100);
});
setTimeout(() => {
  console.log(JSON.stringify({timeout: pusher.connection.state}));
  process.exit(1);
}, %d);
"""


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--app",
            f"{APP_ID}:{APP_KEY}:{APP_SECRET}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    log.close()
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 4 * TIMEOUT
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/ready", timeout=1, context=context
                ) as response:
                    assert json.load(response)["ready"] is True
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.05)
        yield port, cert
    finally:
        proc.terminate()
        proc.wait(timeout=3 * TIMEOUT)


@pytest.mark.node
def test_pusher_js_over_wss_and_the_sdk_over_https(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    channel = unique("tls-")
    script = PUSHER_JS_OVER_TLS % int(4 * TIMEOUT * 1000)
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(cert)}
    node = subprocess.Popen(
        [node_binary(), "-e", script, str(port), channel],
        cwd=E2E,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert node.stdout is not None
        ready = json.loads(node.stdout.readline() or "{}")
        assert ready == {"ready": True}, node.stderr.read() if node.stderr else ""
        client = pusher.Pusher(
            app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=port, ssl=True
        )
        # The SDK pins its own CA bundle for https (pusher/requests.py): trust the test's
        # self-signed certificate instead, as a user of a private CA would.
        client._pusher_client.http.options["verify"] = str(cert)
        assert client.trigger(channel, "greeting", {"over": "tls"}) == {}
        delivered = json.loads(node.stdout.readline() or "{}")
        assert delivered["event"] == {"over": "tls"}, delivered
        assert delivered["transport"] == "ws"
        assert node.wait(timeout=2 * TIMEOUT) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        for stream in (node.stdout, node.stderr):
            if stream is not None:
                stream.close()


def test_plain_http_is_refused_on_a_tls_port(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=TIMEOUT).close()
