"""The debug console against a real ``tidings serve --console`` (docs/console.md): logins,
cookie and CSRF rules, the overview and members, and every record type on the event stream,
made by real Pusher clients, the pusher SDK, webhooks and the console's own form."""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
from console_client import ConsoleClient, EventStream
from fallback_helpers import FallbackSession
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUIET,
    TIMEOUT,
    SocketOpener,
    channel_auth,
    rest_request,
    sdk_client,
    unique,
)
from webhook_helpers import Receiver, webhook_config

from server_process import ServerProcess, free_port
from tls_support import self_signed

TOKEN = "operator-token-0123456789"
OTHER_ID, OTHER_KEY, OTHER_SECRET = "23456", "other-key", "other-secret"
HOOKED_ID, HOOKED_KEY, HOOKED_SECRET = "34567", "hooked-key", "hooked-secret"
QUIET_ID, QUIET_KEY, QUIET_SECRET = "45678", "quiet-key", "quiet-secret"
STATIC = Path(__file__).resolve().parents[2] / "src" / "tidings" / "console" / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


# --- one console server for the module --------------------------------------------------


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, hooks: Receiver
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("console")
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    occupied = {"event_types": ["channel_occupied"]}
    apps: list[dict[str, Any]] = [
        {
            "id": APP_ID,
            "key": APP_KEY,
            "secret": APP_SECRET,
            "client_events": True,
            "max_batch_size": 500,
        },
        {"id": OTHER_ID, "key": OTHER_KEY, "secret": OTHER_SECRET},
        {
            "id": HOOKED_ID,
            "key": HOOKED_KEY,
            "secret": HOOKED_SECRET,
            "webhooks": [{"url": hooks.url(), **occupied}, {"url": dead_url, **occupied}],
        },
        {"id": QUIET_ID, "key": QUIET_KEY, "secret": QUIET_SECRET},
    ]
    config = webhook_config(
        directory, apps, console=True, console_token=TOKEN, webhook_retry_for=30.0
    )
    server = ServerProcess(free_port(), config, directory / "server.log", cwd=directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def console(console_server: ServerProcess) -> AsyncIterator[ConsoleClient]:
    """A client logged in with the operator token (every app)."""
    client = ConsoleClient(console_server.http_url)
    await client.login(token=TOKEN)
    yield client
    await client.close()


@pytest.fixture
async def anonymous(console_server: ServerProcess) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient(console_server.http_url)
    yield client
    await client.close()


def set_cookie(response: aiohttp.ClientResponse) -> str:
    cookies = response.headers.getall("Set-Cookie", [])
    assert len(cookies) == 1, cookies
    return str(cookies[0])


def cookie_attributes(header: str) -> list[str]:
    return [part.strip() for part in header.split(";")][1:]


# --- off --------------------------------------------------------------------------------


async def test_without_console_every_console_path_is_404(make_server: Any) -> None:
    server = make_server()
    client = ConsoleClient(server.http_url)
    try:
        for path in ("/console", "/console/static/console.js", "/console/api/session"):
            status, body, _ = await client.request("GET", path)
            assert status == 404, path
            assert body == {"error": "Not Found"}, path
        status, body, _ = await client.request("POST", "/console/api/login", {"token": "x" * 20})
        assert status == 404 and body == {"error": "Not Found"}
    finally:
        await client.close()


# --- logging in -------------------------------------------------------------------------


async def test_login_with_key_and_secret_sees_that_app_only(anonymous: ConsoleClient) -> None:
    status, body, response = await anonymous.request(
        "POST", "/console/api/login", {"key": APP_KEY, "secret": APP_SECRET}
    )
    assert status == 200, body
    assert response.content_type == "application/json"
    assert body["apps"] == [{"id": APP_ID, "key": APP_KEY}]
    assert isinstance(body["csrf"], str) and len(body["csrf"]) >= 32
    header = set_cookie(response)
    assert header.startswith("tidings_console=")
    assert len(header.split(";")[0]) > len("tidings_console=") + 32
    attributes = cookie_attributes(header)
    assert sorted(attributes) == sorted(
        ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"]
    ), header
    # Plain HTTP: no Secure, or the browser would never send the cookie back.
    assert "Secure" not in attributes

    status, session, _ = await anonymous.request("GET", "/console/api/session")
    assert status == 200
    assert session == {"apps": [{"id": APP_ID, "key": APP_KEY}], "csrf": body["csrf"]}
    status, body, _ = await anonymous.request("GET", f"/console/api/apps/{OTHER_ID}/overview")
    assert status == 403 and isinstance(body["error"], str)
    status, body, _ = await anonymous.request("GET", "/console/api/apps/nope/overview")
    assert status == 403 and isinstance(body["error"], str)


async def test_login_with_the_token_sees_every_app(anonymous: ConsoleClient) -> None:
    body = await anonymous.login(token=TOKEN)
    assert [app["id"] for app in body["apps"]] == [APP_ID, OTHER_ID, HOOKED_ID, QUIET_ID]
    for app in body["apps"]:
        status, _, _ = await anonymous.request("GET", f"/console/api/apps/{app['id']}/overview")
        assert status == 200


async def test_wrong_credentials_are_401_without_saying_which_part(
    console_server: ServerProcess,
) -> None:
    # From an address of its own: the failed-login limit counts per address.
    client = ConsoleClient(console_server.http_url, local_address="127.0.0.2")
    try:
        for credentials, error in [
            ({"key": APP_KEY, "secret": "wrong"}, "Wrong key or secret"),
            ({"key": "no-such-key", "secret": APP_SECRET}, "Wrong key or secret"),
            ({"token": "wrong-token-0123456789"}, "Wrong token"),
        ]:
            status, body, response = await client.request("POST", "/console/api/login", credentials)
            assert (status, body) == (401, {"error": error}), credentials
            assert "Set-Cookie" not in response.headers
        status, body, _ = await client.request("GET", "/console/api/session")
        assert (status, body) == (401, {"error": "Not logged in"})
    finally:
        await client.close()


async def test_a_token_login_is_refused_when_no_token_is_configured(make_server: Any) -> None:
    server = make_server(console=True)
    client = ConsoleClient(server.http_url)
    try:
        status, body, _ = await client.request("POST", "/console/api/login", {"token": TOKEN})
        assert (status, body) == (401, {"error": "Wrong token"})
        await client.login(key=APP_KEY, secret=APP_SECRET)  # the app login still works
    finally:
        await client.close()


async def test_login_must_be_json_from_this_origin(
    console_server: ServerProcess, anonymous: ConsoleClient
) -> None:
    credentials = json.dumps({"key": APP_KEY, "secret": APP_SECRET}).encode()
    # A plain HTML form (another site's) can only send form encodings.
    status, body, _ = await anonymous.request(
        "POST",
        "/console/api/login",
        data=b"key=app-key&secret=app-secret",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415 and isinstance(body["error"], str)
    status, body, _ = await anonymous.request(
        "POST",
        "/console/api/login",
        data=credentials,
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    status, body, _ = await anonymous.request(
        "POST",
        "/console/api/login",
        data=credentials,
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert status == 403 and isinstance(body["error"], str)
    status, body, _ = await anonymous.request(
        "POST",
        "/console/api/login",
        data=credentials,
        headers={"Content-Type": "application/json", "Origin": console_server.http_url},
    )
    assert status == 200, body
    status, body, _ = await anonymous.request(
        "POST",
        "/console/api/login",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and isinstance(body["error"], str)


async def test_the_eleventh_failed_login_in_a_minute_is_429(
    console_server: ServerProcess,
) -> None:
    client = ConsoleClient(console_server.http_url, local_address="127.0.0.3")
    bystander = ConsoleClient(console_server.http_url, local_address="127.0.0.4")
    try:
        for _ in range(10):
            status, _, _ = await client.request(
                "POST", "/console/api/login", {"key": APP_KEY, "secret": "guess"}
            )
            assert status == 401
        status, body, response = await client.request(
            "POST", "/console/api/login", {"key": APP_KEY, "secret": APP_SECRET}
        )
        assert status == 429 and isinstance(body["error"], str)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        # Another address is not affected.
        await bystander.login(key=APP_KEY, secret=APP_SECRET)
    finally:
        await client.close()
        await bystander.close()


class TlsServer(ServerProcess):
    """A server process that serves https:// (its readiness is asked over TLS)."""

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def is_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tidings exited early:\n{self.logs()}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(f"{self.http_url}/ready", timeout=1, context=context):
                return True
        except OSError:
            return False


async def test_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "tidings.toml"
    config.write_text(f"console = true\ntls_cert = {str(cert)!r}\ntls_key = {str(key)!r}\n")
    server = TlsServer(free_port(), config, tmp_path / "server.log")
    await server.astart()
    client = ConsoleClient(server.http_url, ssl=False)
    try:
        status, body, response = await client.request(
            "POST", "/console/api/login", {"key": APP_KEY, "secret": APP_SECRET}
        )
        assert status == 200, body
        assert "Secure" in cookie_attributes(set_cookie(response))
    finally:
        await client.close()
        server.stop()


# --- CSRF, logout -----------------------------------------------------------------------


async def test_every_post_needs_the_csrf_token(console: ConsoleClient) -> None:
    event = {"channel": unique("csrf"), "event": "hello", "data": "hi"}
    path = f"/console/api/apps/{APP_ID}/events"
    refused = (403, {"error": "Missing or wrong CSRF token"})
    status, body, _ = await console.request("POST", path, event, csrf=False)
    assert (status, body) == refused
    status, body, _ = await console.request(
        "POST", path, event, csrf=False, headers={"X-CSRF-Token": "forged"}
    )
    assert (status, body) == refused
    status, body, _ = await console.request("POST", "/console/api/logout", csrf=False)
    assert (status, body) == refused
    status, body, _ = await console.request("POST", path, event)
    assert (status, body) == (200, {"ok": True})


async def test_logout_forgets_the_session(console_server: ServerProcess) -> None:
    client = ConsoleClient(console_server.http_url)
    try:
        await client.login(key=APP_KEY, secret=APP_SECRET)
        cookie = next(iter(client.session.cookie_jar))
        stolen = f"{cookie.key}={cookie.value}"
        stream = await client.stream(APP_ID)
        status, body, response = await client.request("POST", "/console/api/logout")
        assert status == 204 and body is None
        attributes = cookie_attributes(set_cookie(response))
        assert "Max-Age=0" in attributes and "Path=/console" in attributes
        status, body, _ = await client.request("GET", "/console/api/session")
        assert (status, body) == (401, {"error": "Not logged in"})
        # The old cookie, replayed, is refused too: the session was revoked, not just dropped.
        status, body, _ = await client.request(
            "GET", "/console/api/session", headers={"Cookie": stolen}
        )
        assert (status, body) == (401, {"error": "Not logged in"})
        await stream.wait(lambda: stream._reader.done(), "the end of the stream")  # noqa: SLF001
    finally:
        await client.close()


# --- the page and its files ---------------------------------------------------------------


async def test_page_headers_and_static_files(
    console_server: ServerProcess, anonymous: ConsoleClient
) -> None:
    status, _, response = await anonymous.request("GET", "/console")
    # The page is the console-ui helper's file: served when the package has it.
    assert status == (200 if (STATIC / "console.html").is_file() else 404)
    if status == 200:
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.content_type == "text/html"
    for name in sorted(p.name for p in STATIC.glob("*") if p.is_file()) if STATIC.is_dir() else []:
        status, _, response = await anonymous.request("GET", f"/console/static/{name}")
        assert status == 200, name
        assert response.content_type == mimetypes.guess_type(name)[0], name
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in (
        "/console/static/missing.js",
        "/console/static/..%2Froutes.py",
        "/console/static/%2E%2E%2Fauth.py",
        "/console/static/.hidden",
        "/console/static/../routes.py",
    ):
        status, _, _ = await anonymous.request("GET", path)
        assert status == 404, path


# --- overview and members -----------------------------------------------------------------


async def test_overview_and_members_with_real_clients(
    console_server: ServerProcess, console: ConsoleClient, open_socket: SocketOpener
) -> None:
    public, presence = unique("news"), unique("presence-room")
    ws = console_server.ws_url
    alice = await open_socket(ws, QUIET_KEY)
    bob = await open_socket(ws, QUIET_KEY)
    await alice.subscribe(public)
    await bob.subscribe(public)
    for socket, user, info in ((alice, "alice", {"name": "Alice"}), (bob, "bob", None)):
        member: dict[str, Any] = {"user_id": user}
        if info is not None:
            member["user_info"] = info
        data = json.dumps(member)
        auth = channel_auth(socket.socket_id, presence, data, key=QUIET_KEY, secret=QUIET_SECRET)
        await socket.subscribe(presence, auth, data)

    status, body, _ = await console.request("GET", f"/console/api/apps/{QUIET_ID}/overview")
    assert status == 200, body
    assert body == {
        "app": {"id": QUIET_ID, "key": QUIET_KEY},
        "connections": 2,
        "nodes": 1,
        "channels": [
            {"name": public, "subscription_count": 2},
            {"name": presence, "subscription_count": 2, "user_count": 2},
        ],
        "channels_truncated": False,
    }
    status, body, _ = await console.request(
        "GET", f"/console/api/apps/{QUIET_ID}/channels/{presence}/members"
    )
    assert status == 200, body
    assert body["channel"] == presence
    assert sorted(body["members"], key=lambda m: m["id"]) == [
        {"id": "alice", "info": {"name": "Alice"}},
        {"id": "bob", "info": None},
    ]
    status, body, _ = await console.request(
        "GET", f"/console/api/apps/{QUIET_ID}/channels/{public}/members"
    )
    assert status == 400 and isinstance(body["error"], str)

    await bob.close()
    await wait_for_connections(console, QUIET_ID, 1)


async def wait_for_connections(console: ConsoleClient, app_id: str, expected: int) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        _, body, _ = await console.request("GET", f"/console/api/apps/{app_id}/overview")
        if body["connections"] == expected:
            return
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_test_event_is_checked_like_a_rest_trigger(
    console: ConsoleClient, console_server: ServerProcess, open_socket: SocketOpener
) -> None:
    channel = unique("form")
    listener = await open_socket(console_server.ws_url)
    await listener.subscribe(channel)
    path = f"/console/api/apps/{APP_ID}/events"
    status, body, _ = await console.request(
        "POST", path, {"channel": channel, "event": "greeting", "data": '{"n":1}'}
    )
    assert (status, body) == (200, {"ok": True})
    message = await listener.expect("greeting", channel)
    assert message["data"] == '{"n":1}'

    for bad in (
        {"channel": "bad channel!", "event": "e", "data": ""},
        {"channel": channel, "event": "x" * 201, "data": ""},
        {"channel": channel, "event": "e", "data": "x" * 10241},
    ):
        status, body, _ = await console.request("POST", path, bad)
        rest = await asyncio.to_thread(
            rest_request,
            console_server.http_url,
            "POST",
            f"/apps/{APP_ID}/events",
            json_body={"channels": [bad["channel"]], "name": bad["event"], "data": bad["data"]},
        )
        # The same status and message as the REST API's.
        assert (status, body) == (rest.status, rest.json()), bad
        assert status in (400, 413), bad
    status, body, _ = await console.request("POST", path, {"channel": channel})
    assert status == 400 and isinstance(body["error"], str)


# --- the event stream ---------------------------------------------------------------------


async def test_the_stream_shows_a_clients_life(
    console_server: ServerProcess, console: ConsoleClient, open_socket: SocketOpener
) -> None:
    stream = await console.stream(APP_ID)
    assert stream.lines[0] == "retry: 2000"
    channel, private = unique("news"), unique("private-chat")
    socket = await open_socket(console_server.ws_url)
    peer = await open_socket(console_server.ws_url)
    sid = socket.socket_id
    connected = await stream.expect("connection", type="connection", socket_id=sid)
    assert connected["transport"] == "ws"
    assert isinstance(connected["time"], int) and connected["node"] == "memory"

    await socket.subscribe(channel)
    await stream.expect("subscription", type="subscribed", socket_id=sid, channel=channel)

    # A refused subscription, with the reason the client got.
    await socket.send_subscribe(private, f"{APP_KEY}:{'0' * 64}")
    error = await socket.subscription_error(private)
    refused = await stream.expect("refusal", type="refused", socket_id=sid, channel=private)
    assert refused["reason"] == error["error"]
    assert refused["reason"].startswith("Invalid signature")
    assert refused["code"] == 401

    # A client event.
    await socket.subscribe_private(private)
    await peer.subscribe_private(private)
    await socket.send_event("client-typing", {"who": "me"}, private)
    await peer.expect("client-typing", private)
    event = await stream.expect("client event", type="client_event", event="client-typing")
    assert event["channel"] == private and event["socket_id"] == sid
    assert json.loads(event["data"]) == {"who": "me"} and event["truncated"] is False

    # Triggers: REST through the SDK, then the console's own form.
    await asyncio.to_thread(
        sdk_client(console_server.port).trigger, [channel], "from-rest", "x" * 1500, sid
    )
    rest = await stream.expect("REST trigger", type="api_message", event="from-rest")
    assert rest["channels"] == [channel] and rest["source"] == "rest"
    assert rest["data"] == "x" * 1000 and rest["truncated"] is True
    assert rest["socket_id"] == sid
    path = f"/console/api/apps/{APP_ID}/events"
    await console.request("POST", path, {"channel": channel, "event": "from-form", "data": "d"})
    form = await stream.expect("console trigger", type="api_message", event="from-form")
    assert form["source"] == "console" and form["socket_id"] is None and form["data"] == "d"

    # Disconnections: by the client, then by the server (the app terminates a user).
    await socket.close()
    gone = await stream.expect("disconnection", type="disconnection", socket_id=sid)
    assert (gone["by"], gone["code"]) == ("client", 1000)
    await stream.expect("unsubscription", type="unsubscribed", socket_id=sid, channel=channel)
    await peer.signin({"id": "carol"})
    await asyncio.to_thread(sdk_client(console_server.port).terminate_user_connections, "carol")
    cut = await stream.expect("disconnection", type="disconnection", socket_id=peer.socket_id)
    assert cut["by"] == "server" and cut["code"] == 4009
    assert cut["reason"] == "Connection terminated by the app"


async def test_http_fallback_connections_name_their_transport(
    console_server: ServerProcess, console: ConsoleClient
) -> None:
    stream = await console.stream(APP_ID)
    async with aiohttp.ClientSession() as http:
        polling = FallbackSession(http, console_server.http_url)
        polling_id = await polling.open_polling()
        streaming = FallbackSession(http, console_server.http_url)
        async with streaming.stream() as response:
            streaming_id = await streaming.open_stream(response)
            for socket_id, transport in (
                (polling_id, "xhr_polling"),
                (streaming_id, "xhr_streaming"),
            ):
                record = await stream.expect(
                    "a fallback connection", type="connection", socket_id=socket_id
                )
                assert record["transport"] == transport


async def test_stats_show_deliveries_per_second(
    console_server: ServerProcess, console: ConsoleClient, open_socket: SocketOpener
) -> None:
    channel = unique("busy")
    listeners = [await open_socket(console_server.ws_url, QUIET_KEY) for _ in range(3)]
    for listener in listeners:
        await listener.subscribe(channel)
    stream = await console.stream(QUIET_ID)
    rest = pusher.Pusher(
        app_id=QUIET_ID,
        key=QUIET_KEY,
        secret=QUIET_SECRET,
        host="127.0.0.1",
        port=console_server.port,
        ssl=False,
        timeout=TIMEOUT,
    )

    done = asyncio.Event()

    async def publish() -> None:
        while not done.is_set():
            await asyncio.to_thread(rest.trigger, [channel], "tick", "{}")
            await asyncio.sleep(0.02)

    publisher = asyncio.ensure_future(publish())
    try:
        busy = await stream.expect(
            "stats with deliveries",
            timeout=3 * TIMEOUT,
            type="stats",
            connections=3,
            nodes=1,
        )
        await stream.wait(
            lambda: any(r["deliveries_per_second"] > 0 for r in stream.of_type("stats")),
            "stats with deliveries_per_second > 0",
            3 * TIMEOUT,
        )
    finally:
        done.set()
        await publisher
    # Read what the listeners were sent, or their close handshakes would wait behind it.
    for listener in listeners:
        with contextlib.suppress(TimeoutError):
            while True:
                await listener.recv(timeout=QUIET)
    assert set(busy) == {
        "type",
        "time",
        "node",
        "deliveries_per_second",
        "connections",
        "nodes",
    }


async def test_filters_pass_only_their_channel_and_event(
    console_server: ServerProcess, console: ConsoleClient
) -> None:
    wanted, other = unique("wanted"), unique("other")
    stream = await console.stream(APP_ID, channel=wanted, event="match")
    rest = sdk_client(console_server.port)
    for channel, name, data in [
        (other, "match", "wrong channel"),
        (wanted, "nope", "wrong event"),
        (wanted, "match", "first"),
        (other, "nope", "neither"),
        (wanted, "match", "last"),
    ]:
        await asyncio.to_thread(rest.trigger, [channel], name, data)
    await stream.expect("the last matching event", type="api_message", data="last")
    shown = [r for r in stream.records if r["type"] not in ("stats", "dropped")]
    assert [r["data"] for r in shown] == ["first", "last"], shown


async def test_a_burst_past_the_rate_limit_is_reported_as_dropped(
    console_server: ServerProcess, console: ConsoleClient
) -> None:
    channel = unique("burst")
    stream = await console.stream(APP_ID, channel=channel)
    batch = [{"channel": channel, "name": f"e{i}", "data": "{}"} for i in range(500)]
    await asyncio.to_thread(sdk_client(console_server.port).trigger_batch, batch)
    await stream.wait(
        lambda: sum(r["count"] for r in stream.of_type("dropped")) >= 300,
        "dropped records for the burst",
        3 * TIMEOUT,
    )
    shown = stream.of_type("api_message")
    dropped = sum(r["count"] for r in stream.of_type("dropped"))
    assert len(shown) <= 200
    assert len(shown) + dropped == 500, (len(shown), dropped)


async def test_webhooks_sent_and_failed(
    console_server: ServerProcess, console: ConsoleClient, open_socket: SocketOpener
) -> None:
    stream = await console.stream(HOOKED_ID)
    channel = unique("hooked")
    socket = await open_socket(console_server.ws_url, HOOKED_KEY)
    await socket.subscribe(channel)
    sent = await stream.expect("a webhook sent", type="webhook", status="sent")
    assert sent["events"] == ["channel_occupied"]
    assert sent["http_status"] == 200 and sent["error"] is None
    assert sent["url"].endswith("/hook")
    failed = await stream.expect("a webhook failed", type="webhook", status="failed")
    assert failed["events"] == ["channel_occupied"] and failed["http_status"] is None
    assert failed["url"].endswith("/nobody-listens")
    assert "Connect" in failed["error"], failed


async def test_at_most_twenty_streams_per_node(
    console_server: ServerProcess, console: ConsoleClient
) -> None:
    streams: list[EventStream] = []
    deadline = asyncio.get_running_loop().time() + 3 * TIMEOUT
    while len(streams) < 20:
        # Streams of the tests before are freed as the server notices their clients gone.
        try:
            streams.append(await console.stream(OTHER_ID))
        except AssertionError:
            assert asyncio.get_running_loop().time() < deadline, "streams were never freed"
            await asyncio.sleep(0.2)
    status, body, response = await console.request("GET", f"/console/api/apps/{OTHER_ID}/stream")
    assert status == 429 and isinstance(body["error"], str)
    assert response.headers["Retry-After"]
    for stream in streams:
        stream.close()
    # Closed streams free their places (the server sees each client go within a second).
    deadline = asyncio.get_running_loop().time() + 3 * TIMEOUT
    while True:
        status, _, _ = await console.request("GET", f"/console/api/apps/{OTHER_ID}/overview")
        async with console.session.get(
            console.http_url + f"/console/api/apps/{OTHER_ID}/stream"
        ) as response:
            if response.status == 200:
                break
        assert asyncio.get_running_loop().time() < deadline, "streams were never freed"
        await asyncio.sleep(0.2)


# --- TLS ----------------------------------------------------------------------------------
