"""``Tidings.withRecovery`` in Chromium: a page reload recovers through the tab's
``sessionStorage``, and a handler that throws gets its event again after the connection drops
(in a browser an exception in a WebSocket handler is reported and the next message is handled
as usual, which the Node tests in js/test can only imitate). Each test runs against a real
``tidings serve`` keeping history for ``orders-*`` (events triggered with the ``pusher`` SDK)
and against js/test's Pusher-protocol server (js/support/pusher-server-main.js, a Node
process), which pins the wire format down on its own. What the page's handler saw is read
back from the DOM.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
from playwright.sync_api import Page, expect

from browser_support import chromium, page_server, pusher_js
from server_process import TIMEOUT, ServerProcess, free_port

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
TIDINGS_JS = ROOT / "src" / "tidings" / "static" / "tidings.js"
SERVER_MAIN = ROOT / "js" / "support" / "pusher-server-main.js"


class RecoveryServer:
    """The Node server: ``port``, and ``publish()``, which returns once the event is out."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH: the recovery browser tests need Node.js 20.19+")
        self.process = subprocess.Popen(
            [node, str(SERVER_MAIN)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.port: int = self._answer()["port"]

    def _answer(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the Node server exited ({self.process.poll()})"
        return json.loads(line)

    def publish(self, channel: str, event: str, data: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"publish": [channel, event, data]}) + "\n")
        self.process.stdin.flush()
        self._answer()

    def stop(self) -> None:
        """Closing stdin ends it; a process that hangs is killed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class TidingsServer:
    """A real ``tidings serve`` whose app keeps 100 events of ``orders-*`` for 5 minutes."""

    APP = {"id": "65432", "key": "recovery-key", "secret": "recovery-secret"}

    def __init__(self, folder: Path) -> None:
        config = folder / "tidings.toml"
        app = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.APP.items())
        rule = '[[apps.history]]\npattern = "orders-*"\nsize = 100\nttl = 300\n'
        config.write_text(f"[[apps]]\n{app}{rule}")
        self.process = ServerProcess(free_port(), config, folder / "server.log")
        self.process.start()
        self.port = self.process.port
        self.rest = pusher.Pusher(
            app_id=self.APP["id"],
            key=self.APP["key"],
            secret=self.APP["secret"],
            host="127.0.0.1",
            port=self.port,
            ssl=False,
            timeout=TIMEOUT,
        )

    def publish(self, channel: str, event: str, data: object) -> None:
        self.rest.trigger(channel, event, data)

    def stop(self) -> None:
        self.process.stop()


# The channel comes from the query string; `failOn` names an event number whose handler throws.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tidings.js recovery</title>
<ol data-testid="seen"></ol>
<p data-testid="unrecovered"></p>
<script src="/pusher.min.js"></script>
<script src="%(tidings)s/tidings.js"></script>
<script>
  const pusher = Tidings.withRecovery(new Pusher(%(key)s, {
    cluster: 'local', wsHost: '127.0.0.1', wsPort: %(port)d, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
  }), { storage: window.sessionStorage });
  const params = new URLSearchParams(location.search);
  window.failOn = Number(params.get('failOn'));
  const channel = pusher.subscribe(params.get('channel'));
  channel.bind('x', (data) => {
    const item = document.createElement('li');
    item.textContent = String(data.n);
    document.querySelector('[data-testid="seen"]').append(item);
    if (data.n === window.failOn) {
      window.failOn = 0;
      throw new Error('the handler failed on ' + data.n);
    }
  });
  channel.bind('tidings:unrecovered', (data) => {
    document.querySelector('[data-testid="unrecovered"]').textContent = JSON.stringify(data);
  });
  window.pusher = pusher;
</script>
"""


@pytest.fixture(scope="module", params=["tidings", "node"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TidingsServer | RecoveryServer]:
    if request.param == "tidings":
        server: TidingsServer | RecoveryServer = TidingsServer(tmp_path_factory.mktemp("tidings"))
    else:
        server = RecoveryServer()
    yield server
    server.stop()


@pytest.fixture
def origin(server: TidingsServer | RecoveryServer) -> Iterator[str]:
    page = PAGE % {"tidings": "", "key": json.dumps("recovery-key"), "port": server.port}
    files = {
        "/": (lambda: page.encode(), "text/html; charset=utf-8"),
        "/pusher.min.js": (pusher_js, "application/javascript"),
        "/tidings.js": (TIDINGS_JS.read_bytes, "application/javascript"),
    }
    with page_server(files, "tidings-recovery-page") as url:
        yield url


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium(4 * TIMEOUT) as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(4 * TIMEOUT * 1000)
        try:
            yield page
        finally:
            context.close()


def subscribed(page: Page, channel: str) -> None:
    page.wait_for_function(
        "name => pusher.channel(name) && pusher.channel(name).subscribed", arg=channel
    )


def test_a_reloaded_page_gets_what_happened_while_it_was_away(
    page: Page, origin: str, server: TidingsServer | RecoveryServer
) -> None:
    channel = f"orders-{uuid.uuid4().hex[:10]}"
    url = f"{origin}/?channel={channel}"
    page.goto(url)
    subscribed(page, channel)
    server.publish(channel, "x", {"n": 1})
    expect(page.get_by_test_id("seen").locator("li")).to_have_text(["1"])

    page.goto("about:blank")  # the page is gone; the tab (and its sessionStorage) stays
    server.publish(channel, "x", {"n": 2})
    server.publish(channel, "x", {"n": 3})
    page.goto(url)
    expect(page.get_by_test_id("seen").locator("li")).to_have_text(["2", "3"])
    server.publish(channel, "x", {"n": 4})
    expect(page.get_by_test_id("seen").locator("li")).to_have_text(["2", "3", "4"])
    assert page.get_by_test_id("unrecovered").inner_text() == ""


def test_a_throwing_handler_gets_its_event_again_after_a_drop(
    page: Page, origin: str, server: TidingsServer | RecoveryServer
) -> None:
    channel = f"orders-{uuid.uuid4().hex[:10]}"
    page.goto(f"{origin}/?channel={channel}&failOn=3")
    subscribed(page, channel)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for n in (1, 2, 3):
        server.publish(channel, "x", {"n": n})
    seen = page.get_by_test_id("seen").locator("li")
    expect(seen).to_have_text(["1", "2", "3"])
    assert any("the handler failed on 3" in error for error in errors), errors

    old_socket = page.evaluate("pusher.connection.socket_id")
    page.evaluate("pusher.connection.connection.transport.socket.close()")  # the connection drops
    page.wait_for_function(
        "old => pusher.connection.state === 'connected' && pusher.connection.socket_id !== old",
        arg=old_socket,
    )
    expect(seen).to_have_text(["1", "2", "3", "3"])
    server.publish(channel, "x", {"n": 4})
    expect(seen).to_have_text(["1", "2", "3", "3", "4"])
