"""A real browser: pusher-js 8.6.0 in Debian's Chromium, driven by Playwright, against Tidings.

The page (``page.html``) is served by a static server this module starts on its own port, so it
is a different origin from Tidings and every fallback request goes through real CORS. With
``websocket=off`` the page deletes ``window.WebSocket`` before pusher-js loads: pusher-js then
finds the ``ws`` transport unsupported and falls back to ``xhr_streaming`` (then
``xhr_polling``). Events are triggered over REST with the official ``pusher`` Python SDK and
read back from the page's DOM. Screenshots are kept in ``test-artifacts/``.

Needs ``chromium`` (Debian package) and the ``playwright`` Python package; Playwright's own
browser download (``playwright install``) is never used. Either missing fails the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pusher
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect

from browser_support import ARTIFACTS, chromium, page_server, pusher_js

pytestmark = pytest.mark.node

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

HERE = Path(__file__).resolve().parent

EVENT_COUNT = 5
FALLBACKS = ("xhr_streaming", "xhr_polling")


# -- the page's origin ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """``http://127.0.0.1:P`` serving page.html and pusher.min.js (not the Tidings port)."""
    bundle = pusher_js()
    files = {
        "/": ((HERE / "page.html").read_bytes, "text/html; charset=utf-8"),
        "/pusher.min.js": (lambda: bundle, "application/javascript; charset=utf-8"),
    }
    with page_server(files, "page-origin") as origin:
        yield origin


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium launched by Playwright (sync API; these tests are not async)."""
    with chromium(4 * TIMEOUT) as launched:
        yield launched


@pytest.fixture
def rest(server: Any) -> pusher.Pusher:
    """The official Python server SDK pointed at the module server."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
        timeout=TIMEOUT,
    )


class PusherPage:
    """One browser context (its own localStorage, so pusher-js's transport cache is not shared)
    with page.html open, and what the page printed to its console."""

    def __init__(self, page: Page, label: str, tidings_port: int) -> None:
        self.page = page
        self.label = label
        self.console: list[str] = []
        self.requests: list[str] = []  # "METHOD /path" of every request to Tidings
        self._tidings = f"127.0.0.1:{tidings_port}"
        page.on("console", self._on_console)
        page.on("request", self._on_request)
        page.on("response", self._on_response)
        page.on("websocket", lambda ws: self._on_request_url("WS", ws.url))
        page.on(
            "requestfailed", lambda r: self.console.append(f"requestfailed: {r.url} {r.failure}")
        )
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def _on_request(self, request: Request) -> None:
        self._on_request_url(request.method, request.url)

    def _on_request_url(self, method: str, address: str) -> None:
        url = urlsplit(address)
        if url.netloc == self._tidings:
            self.requests.append(f"{method} {url.path}")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.console.append(
                f"response {response.status}: {response.request.method} {response.url}"
            )

    def used(self, kind: str, method: str = "POST") -> bool:
        """Whether pusher-js sent ``method`` to a Tidings path ending in ``/{kind}``."""
        return any(r.startswith(f"{method} ") and r.endswith(f"/{kind}") for r in self.requests)

    def text(self, element_id: str) -> str:
        return self.page.locator(f"#{element_id}").inner_text()

    def events(self) -> list[str]:
        return self.page.locator("#events li").all_inner_texts()

    def describe(self) -> str:
        fields = ("websocket", "ws-supported", "state", "transport", "socket-id", "subscribed")
        shown = ", ".join(f"{f}={self.text(f)!r}" for f in fields)
        console = "\n  ".join(self.console) or "(empty)"
        requests = "\n  ".join(self.requests) or "(none)"
        return f"[{self.label}] {shown}\n  console:\n  {console}\n  requests:\n  {requests}"

    def wait_subscribed(self, server: Any) -> None:
        try:
            expect(self.page.locator("#state")).to_have_text(
                "connected", timeout=3 * TIMEOUT * 1000
            )
            expect(self.page.locator("#subscribed")).to_have_text("yes", timeout=TIMEOUT * 1000)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}\nserver log:\n{server.logs()}") from exc

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


PageFactory = Callable[..., "PusherPage"]


@pytest.fixture
def open_page(browser: Browser, page_origin: str, server: Any) -> Iterator[PageFactory]:
    """Factory: ``open_page(label, channel, websocket=True, transports=None)``."""
    contexts = []

    def factory(
        label: str, channel: str, websocket: bool = True, transports: list[str] | None = None
    ) -> PusherPage:
        context = browser.new_context(viewport={"width": 900, "height": 620})
        contexts.append(context)
        context.set_default_timeout(2 * TIMEOUT * 1000)
        query = {"port": str(server.port), "key": APP_KEY, "channel": channel}
        if not websocket:
            query["websocket"] = "off"
        if transports:
            query["transports"] = ",".join(transports)
        page = PusherPage(context.new_page(), label, server.port)
        page.page.goto(f"{page_origin}/?{urlencode(query)}")
        return page

    yield factory
    for context in contexts:
        context.close()


def trigger_events(rest: pusher.Pusher, channel: str, run: str) -> list[str]:
    """Trigger EVENT_COUNT events one by one; returns how the page should render them."""
    expected = []
    for n in range(1, EVENT_COUNT + 1):
        data = {"n": n, "run": run, "text": f"event {n} \u2713"}
        rest.trigger(channel, "tick", data)
        # page.html renders `name + " " + JSON.stringify(data)`; the keys keep their order.
        expected.append(f'tick {{"n":{n},"run":"{run}","text":"event {n} \u2713"}}')
    return expected


def wait_events(page: PusherPage, expected: list[str], server: Any, shot: str) -> None:
    """Until the page lists exactly ``expected``; on failure, a screenshot named ``shot``."""
    try:
        expect(page.page.locator("#events li")).to_have_text(expected, timeout=2 * TIMEOUT * 1000)
    except AssertionError as exc:
        path = page.screenshot(shot)
        raise AssertionError(
            f"{exc}\nscreenshot: {path}\n{page.describe()}\nserver log:\n{server.logs()}"
        ) from exc


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transports", "expected_transport", "shot"),
    [
        (None, "xhr_streaming", "chromium-fallback.png"),
        (["xhr_polling"], "xhr_polling", "chromium-fallback-xhr_polling.png"),
    ],
    ids=["defaults", "xhr_polling"],
)
def test_browser_without_websocket_gets_events_over_http(
    open_page: PageFactory,
    rest: pusher.Pusher,
    server: Any,
    transports: list[str] | None,
    expected_transport: str,
    shot: str,
) -> None:
    channel = f"fallback-{uuid.uuid4().hex[:10]}"
    page = open_page("no WebSocket", channel, websocket=False, transports=transports)
    assert page.text("websocket") == "undefined", page.describe()
    assert page.text("ws-supported") == "false", page.describe()
    page.wait_subscribed(server)
    assert page.text("transport") == expected_transport, page.describe()
    # The wire agrees: the session's receive endpoint, and subscribe sent through xhr_send.
    receive = "xhr_streaming" if expected_transport == "xhr_streaming" else "xhr"
    assert page.used(receive) and page.used("xhr_send"), page.describe()
    assert not any(r.startswith("WS ") for r in page.requests), page.describe()

    expected = trigger_events(rest, channel, "solo")
    wait_events(page, expected, server, shot)
    path = page.screenshot(shot)
    # Still on the HTTP transport after the events (no silent upgrade or reconnect).
    assert (page.text("state"), page.text("transport")) == ("connected", expected_transport), (
        f"screenshot: {path}\n{page.describe()}"
    )
    assert page.events() == expected, f"screenshot: {path}\n{page.describe()}"
    assert path.stat().st_size > 0, f"screenshot not written: {path}"


def test_browser_with_and_without_websocket_get_the_same_events(
    open_page: PageFactory, rest: pusher.Pusher, server: Any
) -> None:
    channel = f"same-{uuid.uuid4().hex[:10]}"
    fallback = open_page("no WebSocket", channel, websocket=False)
    native = open_page("WebSocket", channel, websocket=True)
    fallback.wait_subscribed(server)
    native.wait_subscribed(server)
    assert fallback.text("transport") in FALLBACKS, fallback.describe()
    assert native.text("transport") == "ws", native.describe()
    assert native.text("ws-supported") == "true", native.describe()
    assert native.used(APP_KEY, method="WS"), native.describe()
    assert fallback.used("xhr_send") and not fallback.used(APP_KEY, method="WS"), (
        fallback.describe()
    )

    expected = trigger_events(rest, channel, "pair")
    wait_events(fallback, expected, server, "chromium-same-events-fallback.png")
    wait_events(native, expected, server, "chromium-same-events-ws.png")
    shots = (
        fallback.screenshot("chromium-same-events-fallback.png"),
        native.screenshot("chromium-same-events-ws.png"),
    )
    over_http, over_ws = fallback.events(), native.events()
    assert over_http == over_ws == expected, (
        f"screenshots: {shots}\n{fallback.describe()}\n{native.describe()}"
    )
