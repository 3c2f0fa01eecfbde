"""The console's routes on the standalone server: the page, its static files and its JSON
API (the contract: docs/console.md).

Every API answer is JSON, errors ``{"error": "<sentence>"}``. A session is the
``tidings_console`` cookie (``HttpOnly; SameSite=Strict; Path=/console``, ``Secure`` under
TLS); every POST but the login carries ``X-CSRF-Token``, and a login that names an
``Origin`` must come from this server's own (login CSRF).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tidings import api
from tidings.config import Settings
from tidings.console.auth import SESSION_LIFETIME, Grant, LoginLimit, Sessions, same_secret
from tidings.console.streams import Stream
from tidings.console.watch import Watch
from tidings.core.apps import App
from tidings.core.client_address import TrustedProxies, normalize, parse_networks
from tidings.node import BackendRateLimited, ClusterUnavailable, Node
from tidings.protocol.channels import channel_type
from tidings.protocol.rest import RestError, check_trigger

log = logging.getLogger("tidings.console")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
COOKIE = "tidings_console"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_CHANNELS = 500
MAX_LOGIN_BODY = 4096
PING_INTERVAL = 15.0
CHECK_INTERVAL = 1.0  # how often a quiet stream looks for its client having gone
WRONG_KEY = "Wrong key or secret"
WRONG_TOKEN = "Wrong token"
NOT_LOGGED_IN = "Not logged in"
BAD_CSRF = "Missing or wrong CSRF token"
NO_ACCESS = "This session has no access to that app"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AppHandler = Callable[[web.Request, App, Grant], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class Console:
    """The console of one node: its routes, its logins and its :class:`Watch`."""

    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.token = settings.console_token
        key = settings.console_session_key
        self.sessions = Sessions(key.encode() if key else secrets.token_bytes(32))
        self.logins = LoginLimit()
        self.watch = Watch(node)
        self.watch.on_revoke = self._revoked
        self.secure = settings.tls_cert is not None
        self.proxies = TrustedProxies(parse_networks(settings.trusted_proxies))
        self.client_ip_header = settings.client_ip_header
        self._streams: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.RouteDef]:
        app = "/console/api/apps/{app_id}"
        return [
            web.get("/console", self.page),
            web.get("/console/static/{name}", self.static),
            web.post("/console/api/login", self.login),
            web.get("/console/api/session", self.session),
            web.post("/console/api/logout", self.logout),
            web.get(app + "/overview", self._for_app(self.overview)),
            web.get(app + "/channels/{channel}/members", self._for_app(self.members)),
            web.post(app + "/events", self._for_app(self.events)),
            web.get(app + "/stream", self._for_app(self.stream)),
        ]

    async def start(self) -> None:
        self.watch.start()

    async def close(self) -> None:
        await self.watch.close()

    # -- the page ----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self._file("console.html", PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.StreamResponse:
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return self._file(request.match_info["name"], headers)

    def _file(self, name: str, headers: dict[str, str]) -> web.StreamResponse:
        # Only plain names of files in the folder: no path, no dot file, no traversal.
        path = STATIC_DIR / name
        if not STATIC_NAME.fullmatch(name) or not path.is_file():
            return _error(404, "Not Found")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return web.Response(
            body=path.read_bytes(), headers={**headers, "Content-Type": content_type}
        )

    # -- logging in --------------------------------------------------------------------------

    def _grant(self, request: web.Request) -> tuple[str, Grant] | None:
        token = request.cookies.get(COOKIE)
        grant = self.sessions.check(token)
        return (token, grant) if token is not None and grant is not None else None

    def _apps(self, grant: Grant) -> list[dict[str, str]]:
        return [{"id": app.id, "key": app.key} for app in self.node.apps if grant.allows(app.id)]

    def _own_origin(self, request: web.Request) -> str:
        return f"{'https' if self.secure else request.scheme}://{request.host}"

    async def login(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(415, "Send the login as application/json")
        origin = request.headers.get("Origin")
        if origin is not None and origin != self._own_origin(request):
            return _error(403, "Login from another origin refused")
        address = self._client(request)
        wait = self.logins.retry_after(address)
        if wait:
            return _error(
                429, "Too many failed logins; try again later", {"Retry-After": str(wait)}
            )
        raw = await request.content.read(MAX_LOGIN_BODY + 1)
        try:
            body = orjson.loads(raw) if len(raw) <= MAX_LOGIN_BODY else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, 'Expected a JSON object: {"key", "secret"} or {"token"}')
        if "token" in body:
            token = body["token"]
            if (
                not isinstance(token, str)
                or self.token is None
                or not same_secret(token, self.token)
            ):
                self.logins.failed(address)
                return _error(401, WRONG_TOKEN)
            apps: tuple[str, ...] | None = None
        else:
            key, secret = body.get("key"), body.get("secret")
            if not isinstance(key, str) or not isinstance(secret, str):
                return _error(400, 'Expected a JSON object: {"key", "secret"} or {"token"}')
            app = self.node.apps.by_key(key)
            # Compared even for an unknown key, so the timing tells nothing either.
            matches = same_secret(secret, app.secret if app is not None else secrets.token_hex())
            if app is None or not matches:
                self.logins.failed(address)
                return _error(401, WRONG_KEY)
            apps = (app.id,)
        session, grant = self.sessions.issue(apps)
        response = _json({"apps": self._apps(grant), "csrf": self.sessions.csrf(session)})
        response.headers["Set-Cookie"] = self._cookie(session, SESSION_LIFETIME)
        return response

    def _client(self, request: web.Request) -> str:
        """The address failed logins are counted for: behind a trusted proxy, its client."""
        peer = normalize(request.remote or "") or "unknown"
        if not self.proxies:
            return peer
        forwarded = ",".join(request.headers.getall(self.client_ip_header, []))
        return self.proxies.client(peer, forwarded)

    def _cookie(self, value: str, max_age: int) -> str:
        cookie = f"{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={max_age}"
        return cookie + "; Secure" if self.secure else cookie

    async def session(self, request: web.Request) -> web.StreamResponse:
        found = self._grant(request)
        if found is None:
            return _error(401, NOT_LOGGED_IN)
        token, grant = found
        return _json({"apps": self._apps(grant), "csrf": self.sessions.csrf(token)})

    async def logout(self, request: web.Request) -> web.StreamResponse:
        found = self._grant(request)
        if found is None:
            return _error(401, NOT_LOGGED_IN)
        token, grant = found
        if not self.sessions.csrf_ok(token, request.headers.get("X-CSRF-Token")):
            return _error(403, BAD_CSRF)
        self._revoked(grant.session_id, grant.expires)
        any_app = next(iter(self.node.apps)).id  # control messages travel per app
        try:
            await self.watch.revoke(any_app, grant.session_id, grant.expires)
        except Exception:
            log.exception("console: telling the other nodes of a logout failed")
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.headers["Set-Cookie"] = self._cookie("", 0)
        return response

    def _revoked(self, session_id: str, expires: float) -> None:
        self.sessions.revoke(session_id, expires)
        self.watch.close_session(session_id)

    def _for_app(self, handler: AppHandler) -> Handler:
        """401 without a session, 403 for an app it was not granted or a POST without its
        CSRF token; else ``handler(request, app, grant)``."""

        async def checked(request: web.Request) -> web.StreamResponse:
            found = self._grant(request)
            if found is None:
                return _error(401, NOT_LOGGED_IN)
            token, grant = found
            app = self.node.apps.by_id(request.match_info["app_id"])
            if app is None or not grant.allows(app.id):
                return _error(403, NO_ACCESS)
            if request.method == "POST" and not self.sessions.csrf_ok(
                token, request.headers.get("X-CSRF-Token")
            ):
                return _error(403, BAD_CSRF)
            return await handler(request, app, grant)

        return checked

    # -- the app's state ---------------------------------------------------------------------

    async def overview(self, request: web.Request, app: App, grant: Grant) -> web.StreamResponse:
        await self.watch.poll(app.id)
        connections, nodes = self.watch.cluster_counts(app.id)
        occupied = await self.node.channels(app)
        names = sorted(occupied)
        channels = []
        for name in names[:MAX_CHANNELS]:
            entry: dict[str, Any] = {"name": name, "subscription_count": occupied[name]}
            if channel_type(name).is_presence:
                entry["user_count"] = len(await self.node.members(app, name))
            channels.append(entry)
        return _json(
            {
                "app": {"id": app.id, "key": app.key},
                "connections": connections,
                "nodes": nodes,
                "channels": channels,
                "channels_truncated": len(names) > MAX_CHANNELS,
            }
        )

    async def members(self, request: web.Request, app: App, grant: Grant) -> web.StreamResponse:
        channel = request.match_info["channel"]
        if not channel_type(channel).is_presence:
            return _error(400, "Members are shown for presence channels only")
        members = await self.node.members(app, channel)
        return _json(
            {
                "channel": channel,
                "members": [{"id": m.user_id, "info": m.user_info} for m in members],
            }
        )

    async def events(self, request: web.Request, app: App, grant: Grant) -> web.StreamResponse:
        raw = await request.content.read(app.max_event_payload_bytes + MAX_LOGIN_BODY)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "Expected a JSON object: {channel, event, data}")
        if not isinstance(body, dict):
            return _error(400, "Expected a JSON object: {channel, event, data}")
        channel, event, data = body.get("channel"), body.get("event"), body.get("data", "")
        if not isinstance(channel, str) or not isinstance(event, str):
            return _error(400, "channel and event must be strings")
        if not isinstance(data, str):
            return _error(400, "data must be a string")
        try:
            trigger = check_trigger((channel,), event, data, None, (), api.rest_limits(app))
            await api.publish(self.node, app, [trigger], source="console")
        except RestError as exc:
            return _error(exc.status, exc.message)
        except BackendRateLimited as exc:
            return _error(429, str(exc))
        except ClusterUnavailable as exc:
            return _error(503, f"{exc}: event not published, retry later", {"Retry-After": "1"})
        return _json({"ok": True})

    # -- the live log ------------------------------------------------------------------------

    async def stream(self, request: web.Request, app: App, grant: Grant) -> web.StreamResponse:
        listener = Stream(
            app.id,
            grant.session_id,
            request.query.get("channel", ""),
            request.query.get("event", ""),
        )
        if not self.watch.open_stream(listener):
            return _error(429, "Too many console streams on this server", {"Retry-After": "5"})
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-store",
                    "X-Content-Type-Options": "nosniff",
                }
            )
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            loop = asyncio.get_running_loop()
            last_write = loop.time()
            while not listener.closed:
                await listener.wait(CHECK_INTERVAL)
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the browser went away
                if grant.expires <= time.time():
                    break  # the session is over: the page logs in again
                chunk = listener.take(self.watch.node_id)
                if chunk:
                    await response.write(chunk)
                    last_write = loop.time()
                elif loop.time() - last_write >= PING_INTERVAL:
                    await response.write(b": ping\n\n")
                    last_write = loop.time()
        except ConnectionResetError:
            pass
        finally:
            self.watch.close_stream(listener)
        return response
