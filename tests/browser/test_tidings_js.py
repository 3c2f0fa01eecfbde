"""tidings.js in Chromium: the page loads ``/tidings.js`` from a real ``tidings serve`` (another
origin than the page's, as a ``<script>``), and its ``liveCollection`` on a pusher-js channel
fetches the snapshot from the page's origin (``snapshotUrl``, with ``X-Socket-ID``), then
follows the events triggered over REST with the ``pusher`` SDK. The rows are read back from the
DOM. The Node tests of the same file are in js/test (tests/e2e/test_tidings_js.py).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pusher
import pytest
from playwright.sync_api import Request, expect

from browser_support import chromium, page_server, pusher_js, screenshot
from server_process import TIMEOUT, ServerProcess, free_port

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
TIDINGS_JS = ROOT / "src" / "tidings" / "static" / "tidings.js"
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
    """The page's origin (main's ``page_server``): the page, pusher-js and the snapshot
    endpoint, whose answer the test sets."""

    url: str
    page: bytes = b""
    snapshot: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def origin() -> Iterator[Origin]:
    state = Origin(url="")
    files = {
        "/": (lambda: state.page, "text/html; charset=utf-8"),
        "/pusher.min.js": (pusher_js, "application/javascript"),
        "/snapshot": (lambda: json.dumps(state.snapshot).encode(), "application/json"),
    }
    with page_server(files, "tidings-js-page") as url:
        state.url = url
        yield state


@pytest.fixture(scope="module")
def tidings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``tidings serve`` for the module, with one app and no snapshot provider."""
    folder = tmp_path_factory.mktemp("tidings-js")
    config = folder / "tidings.toml"
    config.write_text("[[apps]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in APP.items()))
    server = ServerProcess(free_port(), config, folder / "server.log")
    server.start()
    yield server
    server.stop()


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
        socket_ids: list[str | None] = []  # X-Socket-ID of every snapshot request

        def record(request: Request) -> None:
            if urlsplit(request.url).path == "/snapshot":
                socket_ids.append(request.headers.get("x-socket-id"))

        page.on("request", record)
        try:
            page.goto(origin.url + "/")
            rows = page.locator('[data-testid="row"]')
            expect(rows).to_have_text(["1 milk v1", "2 bread v4"])
            assert socket_ids == [page.evaluate("pusher.connection.socket_id")]

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
