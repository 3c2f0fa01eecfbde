"""Small clients for talking to a running Tidings server the way Pusher clients do.

- ``PusherSocket``: a raw ``websockets`` connection that speaks the Pusher protocol by hand
  (so tests see every frame; it never answers a server ``pusher:ping`` by itself).
- ``rest_request``: an HTTP API request signed like the Pusher SDKs sign it, with knobs to
  break each part of the signature on purpose.
- ``channel_auth`` / ``user_auth``: the subscription and signin signatures.
- ``scrape`` / ``value``: ``GET /metrics`` parsed, one sample by name and labels.

Every wait is bounded by a multiple of ``TIMEOUT``, scaled like tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import pusher
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
# How long "nothing arrives" is watched for. Shorter than TIMEOUT to keep the suite fast;
# a message that was going to arrive at all arrives within milliseconds on loopback.
QUIET = TIMEOUT / 10

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
DISABLED_APP_ID = "23456"
DISABLED_KEY = "disabled-key"
DISABLED_SECRET = "disabled-secret"

QUERY = "protocol=7&client=js&version=8.6.0"

# The default app has subscription_count on, so these arrive whenever a channel's count
# changes; tests that are not about them skip them.
SUBSCRIPTION_COUNT = "pusher_internal:subscription_count"
DEFAULT_IGNORE: frozenset[str] = frozenset({SUBSCRIPTION_COUNT})


def unique(prefix: str) -> str:
    """A channel or user name no other test on the shared server uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- signatures ------------------------------------------------------------------------


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_auth(
    socket_id: str,
    channel: str,
    channel_data: str | None = None,
    *,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
) -> str:
    """``key:HMAC(secret, socket_id:channel[:channel_data])`` (Pusher auth signatures)."""
    message = f"{socket_id}:{channel}"
    if channel_data is not None:
        message += f":{channel_data}"
    return f"{key}:{hmac_hex(secret, message)}"


def user_auth(
    socket_id: str, user_data: str, *, key: str = APP_KEY, secret: str = APP_SECRET
) -> str:
    """``key:HMAC(secret, socket_id::user::user_data)`` (Pusher user authentication)."""
    return f"{key}:{hmac_hex(secret, f'{socket_id}::user::{user_data}')}"


# --- HTTP API --------------------------------------------------------------------------

AUTO = "auto"  # rest_request: compute body_md5 from the body (sent only for a non-empty body)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def sdk_client(
    port: int, key: str = APP_KEY, secret: str = APP_SECRET, **options: Any
) -> pusher.Pusher:
    """The official Python server SDK (pusher-http-python) pointed at 127.0.0.1:``port``."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=key,
        secret=secret,
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=TIMEOUT,
        **options,
    )


def query_string(params: dict[str, str]) -> str:
    """Pusher's canonical query: keys lower-cased and sorted, ``k=v`` joined, not escaped."""
    return "&".join(f"{k.lower()}={v}" for k, v in sorted(params.items()))


def rest_request(
    http_url: str,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
    timestamp: int | None = None,
    body_md5: str | None = AUTO,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """Send one HTTP API request signed as pusher-http-node/python sign it.

    ``body_md5=AUTO`` sends the MD5 of the body when the body is non-empty (pusher-http-node's
    habit); ``None`` leaves it out; any other string is sent as is. ``signature`` replaces the
    computed ``auth_signature``.
    """
    if body is None:
        body = b"" if json_body is None else json.dumps(json_body).encode()
    query: dict[str, str] = dict(params or {})
    query["auth_key"] = key
    query["auth_timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    query["auth_version"] = "1.0"
    if body_md5 == AUTO:
        if body:
            query["body_md5"] = hashlib.md5(body).hexdigest()
    elif body_md5 is not None:
        query["body_md5"] = body_md5
    to_sign = "\n".join([method, path, query_string(query)])
    query["auth_signature"] = signature if signature is not None else hmac_hex(secret, to_sign)
    return raw_http(
        http_url,
        method,
        f"{path}?{query_string(query)}",
        body=body,
        headers={"Content-Type": "application/json", **(headers or {})} if body else headers,
    )


def raw_http(
    http_url: str,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """One HTTP/1.1 request on a fresh connection; the target is sent exactly as given."""
    parts = urlsplit(http_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT)
    try:
        try:
            conn.request(method, target, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (413) and close before reading a large body; the
            # response is still waiting to be read.
            pass
        resp = conn.getresponse()
        return HttpResponse(resp.status, resp.read(), dict(resp.getheaders()))
    finally:
        conn.close()


# /metrics samples by name and full label set
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def rest_requests_seen(http_url: str, endpoint: str) -> dict[str, float]:
    """REST requests the server at ``http_url`` finished for ``endpoint``, by status (its
    ``tidings_rest_request_seconds_count`` samples on /metrics)."""
    resp = raw_http(http_url, "GET", "/metrics")
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            if (
                sample.name == "tidings_rest_request_seconds_count"
                and sample.labels["endpoint"] == endpoint
            ):
                seen[sample.labels["status"]] = sample.value
    return seen


def scrape(http_url: str) -> tuple[str, Samples]:
    """``GET /metrics``: the text and every sample by name and full label set."""
    resp = raw_http(http_url, "GET", "/metrics")
    assert resp.status == 200, resp
    text = resp.body.decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, found


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels (0 when absent)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def assert_error_response(resp: HttpResponse, status: int) -> None:
    """An HTTP API error: the given status and a JSON body ``{"error": "<message>"}``."""
    assert resp.status == status, (resp.status, resp.body)
    try:
        payload = resp.json()
    except ValueError as exc:
        raise AssertionError(f"error body is not JSON: {resp.body!r}") from exc
    assert isinstance(payload, dict), payload
    assert isinstance(payload.get("error"), str) and payload["error"], payload


# --- WebSocket -------------------------------------------------------------------------


def ws_app_url(base_ws_url: str, key: str = APP_KEY, query: str = QUERY) -> str:
    return f"{base_ws_url}/app/{key}?{query}"


async def raw_connect(url: str) -> ClientConnection:
    """A plain websockets connection with no keepalive pings (they would count as activity)."""
    return await connect(url, ping_interval=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


@dataclass
class Closed:
    """How a connection ended: the close code the server sent and the messages before it."""

    code: int | None
    reason: str
    messages: list[dict[str, Any]]


class PusherSocket:
    """A hand-driven Pusher protocol client over one WebSocket connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.socket_id = ""
        self.activity_timeout: int | None = None
        self.established: dict[str, Any] = {}

    async def handshake(self) -> dict[str, Any]:
        """Read ``pusher:connection_established`` and remember the socket id."""
        message = await self.recv(ignore=())
        assert message.get("event") == "pusher:connection_established", message
        assert isinstance(message.get("data"), str), message
        data: dict[str, Any] = json.loads(message["data"])
        self.established = data
        self.socket_id = data["socket_id"]
        self.activity_timeout = data.get("activity_timeout")
        return data

    # sending

    async def send_json(self, message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def send_event(self, event: str, data: Any = None, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event}
        if data is not None:
            message["data"] = data
        if channel is not None:
            message["channel"] = channel
        await self.send_json(message)

    # receiving

    async def recv(
        self, timeout: float = TIMEOUT, ignore: Iterable[str] = DEFAULT_IGNORE
    ) -> dict[str, Any]:
        """The next JSON message whose event is not in ``ignore``."""
        skip = frozenset(ignore)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await self.ws.recv()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else None
                    raise AssertionError(f"connection closed (code {code}) while reading") from exc
                assert isinstance(frame, str), f"server sent a binary frame: {frame!r}"
                message = json.loads(frame)
                assert isinstance(message, dict), message
                if message.get("event") not in skip:
                    return message

    async def recv_n(
        self, n: int, timeout: float = TIMEOUT, ignore: Iterable[str] = DEFAULT_IGNORE
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            return [await self.recv(timeout=timeout, ignore=ignore) for _ in range(n)]

    async def expect(
        self,
        event: str,
        channel: str | None = None,
        timeout: float = TIMEOUT,
        ignore: Iterable[str] = DEFAULT_IGNORE,
    ) -> dict[str, Any]:
        """The next message, which must be ``event`` (on ``channel`` if given)."""
        message = await self.recv(timeout=timeout, ignore=ignore)
        assert message.get("event") == event, f"expected {event}, got {message}"
        if channel is not None:
            assert message.get("channel") == channel, message
        return message

    async def assert_silent(
        self, duration: float = QUIET, ignore: Iterable[str] = DEFAULT_IGNORE
    ) -> None:
        """Nothing but ignored events arrives for ``duration`` seconds."""
        try:
            message = await self.recv(timeout=duration, ignore=ignore)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {message}")

    async def wait_closed(self, timeout: float = TIMEOUT) -> Closed:
        """Read until the server closes the connection; returns its close code."""
        messages: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await self.ws.recv()
                except ConnectionClosed as exc:
                    rcvd = exc.rcvd
                    return Closed(
                        rcvd.code if rcvd else None, rcvd.reason if rcvd else "", messages
                    )
                if isinstance(frame, str):
                    messages.append(json.loads(frame))

    # protocol operations

    async def ping(self) -> None:
        """pusher:ping answered by pusher:pong: proves the connection is alive and usable."""
        await self.send_event("pusher:ping", {})
        pong = await self.expect("pusher:pong")
        assert pong.get("data") == "{}", pong

    async def subscribe(
        self,
        channel: str,
        auth: str | None = None,
        channel_data: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe and return the ``pusher_internal:subscription_succeeded`` message."""
        await self.send_subscribe(channel, auth, channel_data)
        return await self.expect("pusher_internal:subscription_succeeded", channel)

    async def send_subscribe(
        self, channel: str, auth: str | None = None, channel_data: str | None = None
    ) -> None:
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send_event("pusher:subscribe", data)

    async def subscribe_private(self, channel: str) -> dict[str, Any]:
        return await self.subscribe(channel, channel_auth(self.socket_id, channel))

    async def subscribe_presence(
        self, channel: str, user_id: str, user_info: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Join a presence channel; returns the decoded roster ``{"ids","hash","count"}``."""
        member: dict[str, Any] = {"user_id": user_id}
        if user_info is not None:
            member["user_info"] = user_info
        channel_data = json.dumps(member)
        message = await self.subscribe(
            channel, channel_auth(self.socket_id, channel, channel_data), channel_data
        )
        assert isinstance(message.get("data"), str), message
        presence: dict[str, Any] = json.loads(message["data"])["presence"]
        return presence

    async def subscription_error(self, channel: str) -> dict[str, Any]:
        """The next message must be ``pusher:subscription_error`` for ``channel``; its data."""
        message = await self.expect("pusher:subscription_error", channel)
        data = message.get("data")
        assert isinstance(data, dict), message
        return data

    async def signin(self, user_data: dict[str, Any]) -> dict[str, Any]:
        """Sign in with a correct signature; returns the decoded signin_success data."""
        encoded = json.dumps(user_data)
        await self.send_event(
            "pusher:signin", {"auth": user_auth(self.socket_id, encoded), "user_data": encoded}
        )
        message = await self.expect("pusher:signin_success")
        assert isinstance(message.get("data"), str), message
        data: dict[str, Any] = json.loads(message["data"])
        assert data == {"user_data": encoded}, data
        return data

    async def close(self) -> None:
        await self.ws.close()


class SocketOpener(Protocol):
    async def __call__(
        self,
        base_ws_url: str,
        key: str = APP_KEY,
        *,
        query: str = QUERY,
        handshake: bool = True,
        path: str | None = None,
    ) -> PusherSocket: ...


@asynccontextmanager
async def open_sockets() -> AsyncIterator[SocketOpener]:
    """A factory of PusherSockets that closes all of them on exit.

    ``path`` (path and query) replaces ``/app/{key}?{query}``; ``handshake=False`` leaves the
    first message unread (for refusals).
    """
    opened: list[PusherSocket] = []

    async def opener(
        base_ws_url: str,
        key: str = APP_KEY,
        *,
        query: str = QUERY,
        handshake: bool = True,
        path: str | None = None,
    ) -> PusherSocket:
        url = base_ws_url + path if path is not None else ws_app_url(base_ws_url, key, query)
        sock = PusherSocket(await raw_connect(url))
        opened.append(sock)
        if handshake:
            await sock.handshake()
        return sock

    try:
        yield opener
    finally:
        for sock in opened:
            await sock.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns True; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
