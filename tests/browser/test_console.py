"""The debug console in a real browser: Debian's Chromium, driven by Playwright, against a real
``tidings serve --console``.

The console page is opened from the server itself (``/console``), under its Content-Security-
Policy; every page records what it logged to the browser console, its uncaught errors and its
CSP violations, and each test ends by asserting there were none. The traffic it watches comes
from real clients: pusher-js 8.6.0 pages in browser contexts of their own (served from another
local origin, channels signed by Python through an exposed function) and the official
``pusher`` Python SDK over REST. Screenshots are kept in ``test-artifacts/console/``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pusher
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    expect,
)

from browser_support import chromium, page_server, pusher_js, screenshot
from server_process import TIMEOUT, ServerProcess, free_port, toml_value

pytestmark = pytest.mark.node

APP = {"id": "12345", "key": "console-key", "secret": "console-secret"}
OTHER_APP = {"id": "23456", "key": "other-key", "secret": "other-secret"}
OPERATOR_TOKEN = "operator-token-for-the-console-test"
WAIT_MS = 4 * TIMEOUT * 1000

# Chromium's own console note on every HTTP error answer. The page may only cause the ones the
# contract prescribes: the session check on load and a refused login (401), plus the ones a
# test provokes on purpose (ConsolePage.allow).
HTTP_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
EXPECTED_ERRORS = {(401, "/console/api/session"), (401, "/console/api/login")}

# Collects Content-Security-Policy violations before any page script runs.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""

CLIENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>console test client</title>
<link rel="icon" href="data:,">
<script src="/pusher.min.js"></script></head>
<body><p id="state">initialized</p>
<script>
  const params = new URLSearchParams(location.search);
  window.received = [];
  window.subscriptions = {};
  const pusher = new Pusher(params.get("key"), {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: Number(params.get("port")),
    forceTLS: false,
    enabledTransports: ["ws"],
    enableStats: false,
    // Signed by the test in Python (window.sign is a Playwright-exposed function).
    channelAuthorization: {
      customHandler: (request, callback) => {
        window.sign(request.socketId, request.channelName)
          .then((auth) => callback(null, auth), (error) => callback(error, null));
      },
    },
  });
  pusher.connection.bind("state_change", (states) => {
    document.getElementById("state").textContent = states.current;
  });
  window.socketId = () => pusher.connection.socket_id || "";
  window.trigger = (name, event, data) => pusher.channel(name).trigger(event, data);
  window.subscribeTo = (name) => {
    const channel = pusher.subscribe(name);
    channel.bind("pusher:subscription_succeeded", () => { window.subscriptions[name] = "ok"; });
    channel.bind("pusher:subscription_error", (error) => {
      window.subscriptions[name] = "error " + JSON.stringify(error);
    });
    channel.bind_global((event, data) => {
      if (!event.startsWith("pusher:") && !event.startsWith("pusher_internal:")) {
        window.received.push({ channel: name, event: event, data: data });
      }
    });
  };
</script></body></html>
"""


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


# -- the server and the browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, client_origin: str
) -> Iterator[ServerProcess]:
    """``tidings serve --console`` with two apps and an operator token, shared by the module.
    Channels named ``hooked-*`` send a channel_occupied webhook to the clients' origin."""
    d = tmp_path_factory.mktemp("tidings-console")
    lines = [f"console_token = {toml_value(OPERATOR_TOKEN)}"]
    webhook = {
        "url": f"{client_origin}/webhook",
        "event_types": ["channel_occupied"],
        "filter": {"channel_name_starts_with": "hooked-"},
    }
    for app in ({**APP, "client_events": True, "webhooks": [webhook]}, OTHER_APP):
        lines += ["", "[[apps]]", *(f"{k} = {toml_value(v)}" for k, v in app.items())]
    config = d / "tidings.toml"
    config.write_text("\n".join(lines) + "\n")
    server = ServerProcess(free_port(), config, d / "server.log", args=("--console",))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(4 * TIMEOUT) as launched:
        yield launched


@pytest.fixture
def rest(console_server: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP["id"],
        key=APP["key"],
        secret=APP["secret"],
        host="127.0.0.1",
        port=console_server.port,
        ssl=False,
        timeout=TIMEOUT,
    )


# -- the console page --------------------------------------------------------------------------


class ConsolePage:
    """The console open in a browser context of its own (its own cookie jar), and everything
    it logged: console messages, uncaught errors, CSP violations."""

    def __init__(self, context: BrowserContext, server: ServerProcess) -> None:
        self.context = context
        self.server = server
        self.messages: list[str] = []
        self.unexpected: list[str] = []
        self.expected_errors = set(EXPECTED_ERRORS)
        self.allowed_patterns: list[re.Pattern[str]] = []
        context.add_init_script(CSP_WATCH)
        self.page = context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.unexpected.append(f"pageerror: {error}"))
        response = self.page.goto(f"{server.http_url}/console")
        assert response is not None and response.ok, response
        # The checks below only mean something under the contract's policy.
        self.policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in self.policy and "style-src 'self'" in self.policy, self.policy

    def _on_console(self, message: ConsoleMessage) -> None:
        text = f"{message.type}: {message.text}"
        self.messages.append(text)
        if message.type not in ("error", "warning"):
            return
        status = HTTP_ERROR.match(message.text)
        where = urlsplit(message.location.get("url", "")).path
        if status and (int(status.group(1)), where) in self.expected_errors:
            return
        if any(pattern.search(message.text) for pattern in self.allowed_patterns):
            return
        self.unexpected.append(f"{text} ({message.location.get('url', '')})")

    def allow_all(self, pattern: str) -> None:
        """Console errors matching ``pattern`` are expected (a test that stops the server)."""
        self.allowed_patterns.append(re.compile(pattern))

    def allow(self, status: int, path: str) -> None:
        """An HTTP error answer the test provokes on purpose, so not a page error."""
        self.expected_errors.add((status, path))

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def entries(self, kind: str, containing: str) -> Locator:
        """Visible log entries of one record type whose text contains ``containing``."""
        selector = f'[data-testid="log-entry"][data-type="{kind}"]:visible'
        return self.page.locator(selector).filter(has_text=containing)

    def login_with_key(self, key: str, secret: str) -> None:
        self.by("login-key").fill(key)
        self.by("login-secret").fill(secret)
        self.by("login-submit").click()

    def login_with_token(self, token: str) -> None:
        self.by("login-token").fill(token)
        self.by("login-token-submit").click()

    def wait_live(self) -> None:
        expect(self.by("stream-status")).to_have_text("live", timeout=WAIT_MS)

    def session_status(self) -> int:
        """What GET /console/api/session answers from the page's own context (its cookies)."""
        return int(self.page.evaluate("fetch('/console/api/session').then((r) => r.status)"))

    def cookie(self) -> dict[str, Any] | None:
        cookies = [c for c in self.context.cookies() if c["name"] == "tidings_console"]
        return dict(cookies[0]) if cookies else None

    def shot(self, name: str) -> Path:
        return screenshot(self.page, "console", name)

    def describe(self) -> str:
        messages = "\n  ".join(self.messages) or "(none)"
        return f"console messages:\n  {messages}\nserver log:\n{self.server.logs()}"

    def assert_clean(self) -> None:
        """No console errors or warnings beyond the expected 401s, no page errors, no CSP
        violations."""
        violations = self.page.evaluate("window.__cspViolations")
        assert violations == [], f"CSP violations: {violations}\n{self.describe()}"
        assert self.unexpected == [], f"{self.unexpected}\n{self.describe()}"


class ClientPage:
    """A pusher-js client in a browser context of its own; private and presence channels are
    signed in Python with the app's secret (or a wrong one, for channels named ``*-badsig-*``)."""

    def __init__(
        self, context: BrowserContext, server: ServerProcess, origin: str, user: str
    ) -> None:
        self.page = context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.user = user
        context.expose_function("sign", self._sign)
        query = urlencode({"key": APP["key"], "port": server.port})
        self.page.goto(f"{origin}/?{query}")
        expect(self.page.locator("#state")).to_have_text("connected", timeout=WAIT_MS)
        self.socket_id = str(self.page.evaluate("window.socketId()"))

    def _sign(self, socket_id: str, channel: str) -> dict[str, str]:
        secret = "not-the-secret" if "-badsig-" in channel else APP["secret"]
        if channel.startswith("presence-"):
            channel_data = json.dumps({"user_id": self.user, "user_info": {"name": self.user}})
            signature = hmac_hex(secret, f"{socket_id}:{channel}:{channel_data}")
            return {"auth": f"{APP['key']}:{signature}", "channel_data": channel_data}
        return {"auth": f"{APP['key']}:{hmac_hex(secret, f'{socket_id}:{channel}')}"}

    def subscribe(self, channel: str, outcome: str = "ok") -> str:
        """Subscribe and wait for the answer; returns it ("ok" or "error {...}")."""
        self.page.evaluate("(name) => window.subscribeTo(name)", channel)
        self.page.wait_for_function("(name) => window.subscriptions[name]", arg=channel)
        answer = str(self.page.evaluate("(name) => window.subscriptions[name]", channel))
        assert answer.startswith(outcome), f"{channel}: {answer}"
        return answer

    def trigger(self, channel: str, event: str, data: Any) -> None:
        """A client event (pusher-js does not echo it back to its sender)."""
        sent = self.page.evaluate("(a) => window.trigger(a[0], a[1], a[2])", [channel, event, data])
        assert sent is True, f"pusher-js refused to send {event} on {channel}"

    def wait_event(self, channel: str, event: str) -> Any:
        found = (
            "(want) => window.received.find((r) => r.channel === want[0] && r.event === want[1])"
        )
        self.page.wait_for_function(found, arg=[channel, event])
        return self.page.evaluate(found, [channel, event])["data"]


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:
    opened: list[BrowserContext] = []

    def new_context() -> BrowserContext:
        opened.append(browser.new_context(viewport={"width": 1280, "height": 800}))
        return opened[-1]

    yield new_context
    for context in opened:
        context.close()


@pytest.fixture
def open_console(
    contexts: Callable[[], BrowserContext], console_server: ServerProcess
) -> Callable[[], ConsolePage]:
    return lambda: ConsolePage(contexts(), console_server)


@pytest.fixture
def live_console(open_console: Callable[[], ConsolePage]) -> ConsolePage:
    """A console logged in with the app's key and secret, its event stream live."""
    console = open_console()
    console.login_with_key(APP["key"], APP["secret"])
    console.wait_live()
    return console


@pytest.fixture(scope="module")
def client_origin() -> Iterator[str]:
    """The clients' own origin: their page and pusher-js, and the webhook receiver (every
    POST is answered 200)."""
    bundle = pusher_js()
    files = {
        "/": (CLIENT_PAGE.encode, "text/html; charset=utf-8"),
        "/pusher.min.js": (lambda: bundle, "application/javascript"),
    }
    with page_server(files, "console-clients") as origin:
        yield origin


@pytest.fixture
def open_client(
    contexts: Callable[[], BrowserContext], console_server: ServerProcess, client_origin: str
) -> Callable[..., ClientPage]:
    return lambda user="client": ClientPage(contexts(), console_server, client_origin, user)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the tests ---------------------------------------------------------------------------------


def test_wrong_credentials_are_refused(open_console: Callable[[], ConsolePage]) -> None:
    console = open_console()
    expect(console.by("login-key")).to_be_visible()
    console.shot("login")

    console.login_with_key(APP["key"], "wrong-secret")
    expect(console.by("login-error")).to_have_text("Wrong key or secret")
    console.login_with_key("no-such-key", APP["secret"])
    expect(console.by("login-error")).to_have_text("Wrong key or secret")
    console.login_with_token("not-the-operator-token")
    expect(console.by("login-error")).to_have_text("Wrong token")
    console.shot("login-refused")

    assert console.cookie() is None, console.describe()
    assert console.session_status() == 401
    expect(console.page.locator("#main-view")).to_be_hidden()
    console.assert_clean()


def test_live_connection_subscription_and_test_event(
    live_console: ConsolePage, open_client: Callable[..., ClientPage]
) -> None:
    console = live_console
    cookie = console.cookie()
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    # One app: no selector, the app is named instead.
    expect(console.by("app-select")).to_be_hidden()

    client = open_client()
    channel = unique("console-live")
    client.subscribe(channel)
    expect(console.entries("connection", client.socket_id)).to_have_count(1)
    expect(console.entries("subscribed", channel)).to_contain_text(client.socket_id)
    row = console.by("channel").filter(has_text=channel)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("1")
    expect(console.by("connections")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(console.by("nodes")).to_have_text("1")

    # The form's defaults are the classic ones; send to the client's channel instead.
    expect(console.by("event-name")).to_have_value("test-event")
    expect(console.by("event-data")).to_have_value('{"hello":"world"}')
    console.by("event-channel").fill(channel)
    console.by("event-send").click()
    expect(console.by("event-result")).to_contain_text("Sent")
    assert client.wait_event(channel, "test-event") == {"hello": "world"}
    message = console.entries("api_message", channel)
    expect(message).to_have_count(1)
    expect(message).to_contain_text("test-event")
    expect(message).to_contain_text("console")

    # The stats records drive the sparkline: a number, and a line with points.
    expect(console.by("deliveries-per-second")).to_have_text(re.compile(r"^\d+$"))
    expect(console.page.locator("#sparkline-line")).to_have_attribute("points", re.compile(r"\d"))
    expect(console.page.locator('[data-testid="log-entry"][data-type="stats"]')).to_have_count(0)
    console.shot("main")
    console.assert_clean()


def test_send_event_errors_are_shown(live_console: ConsolePage) -> None:
    console = live_console
    console.allow(400, f"/console/api/apps/{APP['id']}/events")
    console.by("event-channel").fill("not a channel name!")
    console.by("event-send").click()
    expect(console.by("event-result")).to_contain_text(re.compile("channel", re.IGNORECASE))
    expect(console.by("event-result")).not_to_contain_text("Sent")
    console.assert_clean()


def test_webhook_sent_shows_in_the_log(
    live_console: ConsolePage, open_client: Callable[..., ClientPage]
) -> None:
    console = live_console
    client = open_client()
    channel = unique("hooked")
    client.subscribe(channel)
    # The record names events, not channels: the only webhook this app sends is for hooked-*.
    webhook = console.entries("webhook", "channel_occupied")
    expect(webhook).to_have_count(1)
    expect(webhook).to_contain_text("sent")
    expect(webhook).to_contain_text("/webhook")
    expect(webhook).to_contain_text("200")
    console.assert_clean()


def test_refused_subscription_shows_its_reason(
    live_console: ConsolePage, open_client: Callable[..., ClientPage]
) -> None:
    console = live_console
    client = open_client()
    channel = unique("private-badsig")
    answer = client.subscribe(channel, outcome="error")

    refused = console.entries("refused", channel)
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("Invalid signature")
    expect(refused).to_contain_text(client.socket_id)
    console.by("filter-channel").fill(channel)  # the refused entry alone on the screenshot
    expect(console.page.locator('[data-testid="log-entry"]:visible')).to_have_count(1)
    console.shot("refused")
    assert "status" in answer, answer  # pusher-js saw the refusal too
    console.assert_clean()


def test_filter_and_pause(live_console: ConsolePage, rest: pusher.Pusher) -> None:
    console = live_console
    shown, other = unique("filter-shown"), unique("filter-other")
    rest.trigger(shown, "wanted", {"html": "<b>not markup</b>"})
    rest.trigger(other, "unwanted", {"n": 2})
    expect(console.entries("api_message", shown)).to_have_count(1)
    expect(console.entries("api_message", other)).to_have_count(1)
    # Event data is text on the page, never markup.
    expect(console.entries("api_message", shown)).to_contain_text("<b>not markup</b>")
    expect(console.by("log").locator("b")).to_have_count(0)

    # Substring, case-insensitive: every visible entry is about the filtered channel.
    console.by("filter-channel").fill(shown[len("filter-") :].upper())
    visible = console.page.locator('[data-testid="log-entry"]:visible')
    expect(visible).to_have_count(1)
    expect(visible).to_contain_text(shown)
    console.by("filter-channel").fill("")
    console.by("filter-event").fill("UNWANT")
    expect(visible).to_have_count(1)
    expect(visible).to_contain_text(other)
    console.by("filter-event").fill("")
    expect(console.entries("api_message", shown)).to_have_count(1)
    # The type checkboxes hide a whole kind of record, and bring it back.
    api_messages = console.by("filter-type").and_(console.page.locator('[value="api_message"]'))
    api_messages.uncheck()
    expect(console.entries("api_message", shown)).to_have_count(0)
    api_messages.check()
    expect(console.entries("api_message", shown)).to_have_count(1)

    # Paused: the record arrives (the button counts it) but stays out of the log.
    console.by("pause").click()
    expect(console.by("pause")).to_have_text("Resume")
    held = unique("filter-held")
    rest.trigger(held, "later", {"n": 3})
    expect(console.by("pause")).to_have_text(re.compile(r"Resume \(\d+ new\)"))
    expect(console.entries("api_message", held)).to_have_count(0)
    console.by("pause").click()
    expect(console.entries("api_message", held)).to_have_count(1)
    expect(console.by("pause")).to_have_text("Pause")

    console.by("clear").click()
    expect(console.page.locator('[data-testid="log-entry"]')).to_have_count(0)
    console.assert_clean()


def test_presence_members_show_when_the_channel_is_clicked(
    live_console: ConsolePage, open_client: Callable[..., ClientPage]
) -> None:
    console = live_console
    channel = unique("presence-room")
    alice, bob = open_client("alice"), open_client("bob")
    alice.subscribe(channel)
    bob.subscribe(channel)
    expect(console.entries("subscribed", channel)).to_have_count(2)

    row = console.by("channel").filter(has_text=channel)
    expect(row.locator("td").nth(2)).to_have_text("2")  # users
    row.click()
    members = console.by("member")
    expect(members).to_have_count(2)
    expect(members.filter(has_text="alice")).to_contain_text('{"name":"alice"}')
    expect(members.filter(has_text="bob")).to_have_count(1)

    # A client event between them is in the log too, with its sender and data.
    alice.trigger(channel, "client-typing", {"typing": True})
    assert bob.wait_event(channel, "client-typing") == {"typing": True}
    typing = console.entries("client_event", channel)
    expect(typing).to_contain_text("client-typing")
    expect(typing).to_contain_text(alice.socket_id)
    expect(typing).to_contain_text('{"typing":true}')
    console.shot("presence")
    console.assert_clean()


def test_operator_token_login_and_logout(open_console: Callable[[], ConsolePage]) -> None:
    console = open_console()
    console.login_with_token(OPERATOR_TOKEN)
    console.wait_live()
    # Every app: the selector lists them, and switching opens the other app's stream.
    select = console.by("app-select")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_count(2)
    select.select_option(OTHER_APP["id"])
    console.wait_live()
    assert console.session_status() == 200

    console.by("logout").click()
    expect(console.by("login-token")).to_be_visible()
    expect(console.page.locator("#main-view")).to_be_hidden()
    assert console.session_status() == 401
    assert console.cookie() is None, console.describe()
    console.assert_clean()


def test_stream_status_follows_a_server_restart(
    contexts: Callable[[], BrowserContext], tmp_path: Path
) -> None:
    """The stream goes "reconnecting" while the server is down; after its restart the old
    session is no longer valid (a lone process signs sessions with a key of its own), so the
    page's next call gets a 401 and it goes back to the login view."""
    config = tmp_path / "tidings.toml"
    config.write_text(
        "\n".join(["[[apps]]", *(f"{k} = {toml_value(v)}" for k, v in APP.items())]) + "\n"
    )
    server = ServerProcess(free_port(), config, tmp_path / "server.log", args=("--console",))
    server.start()
    try:
        console = ConsolePage(contexts(), server)
        console.login_with_key(APP["key"], APP["secret"])
        console.wait_live()
        # While the server is away, its calls fail; the page says so instead of breaking.
        console.allow_all(r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|status of 401")
        assert server.stop() == 0, server.logs()
        expect(console.by("stream-status")).to_have_text("reconnecting")
        server.start()
        expect(console.by("login-key")).to_be_visible(timeout=WAIT_MS)
        expect(console.page.locator("#main-view")).to_be_hidden()
        console.assert_clean()
    finally:
        server.stop()
