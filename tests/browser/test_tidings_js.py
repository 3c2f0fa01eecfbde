"""tidings.js in Chromium: the page loads ``/tidings.js`` from a real ``tidings serve`` (another
origin than the page's, as a ``<script>``), and its ``liveCollection`` on a pusher-js channel
fetches the snapshot from the page's origin (``snapshotUrl``, with ``X-Socket-ID``), then
follows the events triggered over REST with the ``pusher`` SDK. The rows are read back from the
DOM. The Node tests of the same file are in js/test (tests/e2e/test_tidings_js.py).
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pusher
import pytest
from playwright.sync_api import Page, expect

from browser_support import chromium, screenshot
from server_process import TIMEOUT, ServerProcess

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
TIDINGS_JS = ROOT / "src" / "tidings" / "static" / "tidings.js"
PUSHER_JS = ROOT / "js" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"
APP = {"id": "54321", "key": "browser-key", "secret": "browser-secret"}

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tidings.js</title>
<ul data-testid="rows"></ul>
<p data-testid="errors"></p>
<script src="/pusher.min.js"></script>
<script src="%(tidings)s/tidings.js"></script>
<script>
  const pusher = new Pusher(%(key)s, {
    cluster: 'local', wsHost: '127.0.0.1', wsPort: %(port)d, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
  });
  const list = document.querySelector('[data-testid="rows"]');
  window.live = Tidings.liveCollection(pusher.subscribe(%(channel)s), {
    snapshotUrl: '/snapshot',
    onChange(rows) {
      list.replaceChildren(...rows.map((row) => {
        const item = document.createElement('li');
        item.dataset.testid = 'row';
        item.textContent = `${row.id} ${row.title} v${row.version}`;
        return item;
      }));
    },
    onError(error) {
      document.querySelector('[data-testid="errors"]').textContent += String(error);
    },
  });
  window.pusher = pusher;
</script>
"""


@dataclass
class Origin:
    """The page's origin: the page, pusher-js and the snapshot endpoint."""

    url: str
    page: bytes = b""
    snapshot: dict[str, Any] = field(default_factory=dict)
    socket_ids: list[str | None] = field(default_factory=list)


@pytest.fixture
def origin() -> Iterator[Origin]:
    if not PUSHER_JS.is_file():
        pytest.fail(f"pusher-js is not installed: run `make install` (npm ci in {ROOT / 'js'})")
    state = Origin(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/snapshot":
                state.socket_ids.append(self.headers.get("X-Socket-ID"))
                self.answer(json.dumps(state.snapshot).encode(), "application/json")
            elif path == "/pusher.min.js":
                self.answer(PUSHER_JS.read_bytes(), "application/javascript")
            elif path == "/":
                self.answer(state.page, "text/html; charset=utf-8")
            else:
                self.send_error(404)

        def answer(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="tidings-js-page", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def tidings(make_server: Any) -> ServerProcess:
    server: ServerProcess = make_server(apps=[APP])
    return server


def rows_text(page: Page) -> list[str]:
    return page.locator('[data-testid="row"]').all_inner_texts()


def test_tidings_js_is_served_with_its_headers(tidings: ServerProcess) -> None:
    with urllib.request.urlopen(f"{tidings.http_url}/tidings.js", timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/javascript")
        assert response.headers["ETag"]
        assert response.read() == TIDINGS_JS.read_bytes()


def test_live_collection_in_chromium(tidings: ServerProcess, origin: Origin) -> None:
    channel = f"live-browser-{uuid.uuid4().hex[:10]}"
    origin.page = (
        PAGE
        % {
            "tidings": tidings.http_url,
            "key": json.dumps(APP["key"]),
            "port": tidings.port,
            "channel": json.dumps(channel),
        }
    ).encode()
    origin.snapshot = {
        "rows": [
            {"id": 1, "title": "milk", "version": 1},
            {"id": 2, "title": "bread", "version": 4},
        ],
        "version": 4,
    }
    rest = pusher.Pusher(
        app_id=APP["id"],
        key=APP["key"],
        secret=APP["secret"],
        host="127.0.0.1",
        port=tidings.port,
        ssl=False,
        timeout=TIMEOUT,
    )
    with chromium(4 * TIMEOUT) as browser:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(4 * TIMEOUT * 1000)
        try:
            page.goto(origin.url + "/")
            rows = page.locator('[data-testid="row"]')
            expect(rows).to_have_text(["1 milk v1", "2 bread v4"])
            assert origin.socket_ids == [page.evaluate("pusher.connection.socket_id")]

            rest.trigger(channel, "created", {"id": 3, "title": "eggs", "version": 1})
            rest.trigger(channel, "updated", {"id": 1, "title": "oat milk", "version": 2})
            rest.trigger(channel, "updated", {"id": 2, "title": "old", "version": 4})
            rest.trigger(channel, "deleted", {"id": 2, "version": 5})
            rest.trigger(channel, "created", {"id": 4, "title": "tea", "version": 1})
            expect(rows).to_have_text(["1 oat milk v2", "3 eggs v1", "4 tea v1"])
            assert page.evaluate("live.get('3').title") == "eggs"
            assert page.locator('[data-testid="errors"]').inner_text() == ""
            screenshot(page, "tidings-js", "live-collection")
        finally:
            context.close()
