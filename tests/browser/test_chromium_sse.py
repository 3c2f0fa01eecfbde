"""A plain ``new EventSource(url)`` in Debian's Chromium against Tidings' SSE streams
(docs/sse.md): it receives events, and when the server drops the stream (a restart), the
browser reconnects by itself with ``Last-Event-ID`` and gets every missed event exactly once.

The page is served from another origin than Tidings (real CORS), and the server keeps its
history in Redis, so it survives the restart. Events are triggered with the official
``pusher`` Python SDK through a second server on the same Redis, which stays up while the
first one is down.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pusher
import pytest
from playwright.sync_api import Browser, Page, Request

from browser_support import chromium, page_server

pytestmark = pytest.mark.node

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
APPS = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "history": [{"pattern": "feed-*", "size": 100, "ttl": 300}],
    }
]

# Nothing but an EventSource: every message's parsed data and its lastEventId, and how many
# times the stream opened.
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>sse</title>
<script>
window.received = [];
window.opens = 0;
const source = new EventSource(new URLSearchParams(location.search).get("stream"));
source.onopen = () => { window.opens += 1; };
source.onmessage = (e) => {
  const message = JSON.parse(e.data);
  if (message.event === "tick") window.received.push({data: message.data, id: e.lastEventId});
};
</script>
"""


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    with page_server({"/": (lambda: PAGE, "text/html; charset=utf-8")}, "sse-page") as origin:
        yield origin


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(4 * TIMEOUT) as launched:
        yield launched


def sdk(port: int) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=TIMEOUT,
    )


def wait_for(page: Page, expression: str) -> None:
    page.wait_for_function(expression, timeout=4 * TIMEOUT * 1000)


def test_event_source_resumes_with_last_event_id_after_a_restart(
    browser: Browser,
    page_origin: str,
    make_server: Callable[..., Any],
    redis_server: Any,
    redis_prefix: str,
) -> None:
    shared = {"redis": redis_server.url, "redis_prefix": redis_prefix}
    server = make_server(APPS, **shared)
    publisher = sdk(make_server(APPS, **shared).port)
    channel = f"feed-{uuid.uuid4().hex[:12]}"
    stream = f"{server.http_url}/app/{APP_KEY}/events?channel={channel}"
    requests: list[Request] = []
    page = browser.new_page()
    page.on("request", lambda r: requests.append(r) if "/events" in r.url else None)
    try:
        page.goto(f"{page_origin}/?stream={stream}")
        wait_for(page, "window.opens === 1")
        for n in (1, 2):
            publisher.trigger(channel, "tick", str(n))
        wait_for(page, "window.received.length === 2")

        server.stop()  # drains: the stream ends, and the browser retries until it is back
        for n in (3, 4):
            publisher.trigger(channel, "tick", str(n))
        server.start()  # same port, same Redis: the history is still there
        wait_for(page, "window.opens === 2 && window.received.length === 4")
        publisher.trigger(channel, "tick", "5")
        wait_for(page, "window.received.length === 5")

        received = page.evaluate("window.received")
        assert [r["data"] for r in received] == ["1", "2", "3", "4", "5"]
        offsets = [int(r["id"].rsplit("-", 1)[1]) for r in received]
        assert offsets == [1, 2, 3, 4, 5]
        # The browser itself sent the last id it had when it reconnected.
        resumed = [r.all_headers().get("last-event-id") for r in requests[1:]]
        assert received[1]["id"] in resumed
    finally:
        page.close()
