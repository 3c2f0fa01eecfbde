"""The Pusher HTTP API (``/apps/{id}/...``), a thin client of the Node.

Every request is authenticated as Pusher signs it (see ``protocol/auth.py``); every
error is a JSON body ``{"error": ...}`` with the status Pusher uses, never a 200.

A publish while the Redis broker cannot reach Redis is answered 503 (with ``Retry-After``)
rather than 200: the event would reach this node's subscribers only, and the SDKs raise on
a 503 so the publisher can retry (docs/redis.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tidings import api
from tidings.brokers.history import HistoryUnavailable
from tidings.core.apps import App
from tidings.node import BackendRateLimited, ClusterUnavailable, Node
from tidings.protocol.auth import rest_request_error
from tidings.protocol.http1 import PublishRequest
from tidings.protocol.rest import (
    RestError,
    RestLimits,
    TriggerChecker,
    parse_batch,
    parse_history_query,
    parse_info,
)
from tidings.protocol.rest import parse_trigger as parse_trigger_body
from tidings.server.http_edge import (
    Endpoint,
    HttpRequest,
    HttpResponse,
    Responder,
    Route,
    aiohttp_response,
    aiohttp_routes,
    json_error,
    json_response,
)

Handler = Callable[[HttpRequest, App, bytes], Awaitable[object]]

UNKNOWN_APP_OR_KEY = "unknown app id or auth_key"
RETRY_AFTER = "1"  # seconds: the broker retries Redis at least this often


# What a REST call may be refused with, each answered by refusal().
REFUSALS = (RestError, BackendRateLimited, ClusterUnavailable, HistoryUnavailable)


def refusal(exc: Exception) -> HttpResponse:
    """The answer to one of :data:`REFUSALS`."""
    match exc:
        case RestError(status=status, message=message):
            return json_error(status, message)
        case BackendRateLimited():
            return json_error(429, str(exc))
        case ClusterUnavailable():
            error = json_error(503, f"{exc}: event not published, retry later")
            return HttpResponse(error.status, error.body, headers={"Retry-After": RETRY_AFTER})
        case HistoryUnavailable():
            error = json_error(503, f"{exc}: retry later")
            return HttpResponse(error.status, error.body, headers={"Retry-After": RETRY_AFTER})
    raise TypeError(f"not a REST refusal: {exc!r}")


def _first(query: list[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` in a query (as a MultiDict's ``get`` finds it)."""
    for key, value in query:
        if key == name:
            return value
    return None


def error_response(status: int, message: str) -> web.Response:
    """A JSON error as an aiohttp response (for aiohttp's own 404/405/413 and refusals)."""
    return aiohttp_response(json_error(status, message))


class RestApi:
    def __init__(self, node: Node, max_request_body: int) -> None:
        self.node = node
        self.max_request_body = max_request_body
        # Per app, not per request: each app's body limits and their checker (which
        # remembers the channel names found valid), with the App they came from.
        self._limits: dict[str, tuple[App, RestLimits, TriggerChecker]] = {}

    def endpoints(self) -> list[Route]:
        """The API's routes, for any server (see ``server/http_edge.py``)."""
        return [
            Route("POST", "/apps/{app_id}/events", self._wrap(self.events)),
            Route("POST", "/apps/{app_id}/batch_events", self._wrap(self.batch_events)),
            Route("GET", "/apps/{app_id}/channels", self._wrap(self.channels)),
            Route("GET", "/apps/{app_id}/channels/{channel}", self._wrap(self.channel)),
            Route("GET", "/apps/{app_id}/channels/{channel}/users", self._wrap(self.users)),
            Route("GET", "/apps/{app_id}/channels/{channel}/history", self._wrap(self.history)),
            Route(
                "POST",
                "/apps/{app_id}/users/{user_id}/terminate_connections",
                self._wrap(self.terminate),
            ),
            # pusher-http-python posts here, without /apps/{id}; the app comes from auth_key.
            Route("POST", "/users/{user_id}/terminate_connections", self._wrap(self.terminate)),
        ]

    async def answer_publish(self, request: PublishRequest) -> HttpResponse:
        """A framed ``POST /apps/{id}/events`` or ``/batch_events`` answered, for the lean
        path (server/lean_http.py): the same checks, errors and publish as their routes,
        read straight from the framer's request (whose path is never percent-encoded)."""
        try:
            body = request.body
            if len(body) > self.max_request_body:
                raise RestError(413, f"request body larger than {self.max_request_body} bytes")
            query = request.query_items
            app = self._signed_app(
                request.app_id, _first(query, "auth_key"), "POST", request.path, query, body
            )
            if request.endpoint == "events":
                result = await self._publish_one(app, body)
            else:
                result = await self._publish_batch(app, body)
        except REFUSALS as exc:
            return refusal(exc)
        return json_response(result)

    def routes(self) -> list[web.RouteDef]:
        return aiohttp_routes(self.endpoints())

    def _wrap(self, handler: Handler) -> Endpoint:
        async def endpoint(request: HttpRequest, responder: Responder) -> None:
            await responder.respond(await self._answer(request, handler))

        return endpoint

    async def _answer(self, request: HttpRequest, handler: Handler) -> HttpResponse:
        try:
            body = await self._body(request)
            app = self._authenticate(request, body)
            result = await handler(request, app, body)
        except REFUSALS as exc:
            return refusal(exc)
        return json_response(result)

    async def _body(self, request: HttpRequest) -> bytes:
        body = await request.read_body(self.max_request_body)
        if body is None:
            raise RestError(413, f"request body larger than {self.max_request_body} bytes")
        return body

    def _authenticate(self, request: HttpRequest, body: bytes) -> App:
        return self._signed_app(
            request.params.get("app_id"),
            request.query.get("auth_key"),
            request.method,
            request.path,
            request.query_items,
            body,
            request.raw_path,
        )

    def _signed_app(
        self,
        app_id: str | None,
        key: str | None,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: bytes,
        raw_path: str | None = None,
    ) -> App:
        """The app a request is for, once its key, signature, timestamp and body_md5 are
        checked (``app_id`` None: the app of ``key``). ``raw_path``: the path as sent, when
        it differs from ``path`` once percent-decoded (a client may have signed either)."""
        if app_id is not None:
            app = self.node.apps.by_id(app_id)
        else:
            app = self.node.apps.by_key(key) if key else None
        if app is None or key != app.key:
            # One answer whether the id or the key is wrong: a 404 for unknown ids would let
            # anyone list the app ids a server holds.
            raise RestError(401, UNKNOWN_APP_OR_KEY)
        problem = rest_request_error(app.secret, method, path, query, body, time.time())
        if problem is not None and raw_path is not None and raw_path != path:
            problem = rest_request_error(app.secret, method, raw_path, query, body, time.time())
        if problem is not None:
            raise RestError(401, problem)
        if not app.enabled:
            raise RestError(403, "app disabled")
        return app

    def _limits_of(self, app: App) -> RestLimits:
        return self._checks_of(app)[1]

    def _checks_of(self, app: App) -> tuple[App, RestLimits, TriggerChecker]:
        known = self._limits.get(app.id)
        if known is None or known[0] is not app:
            limits = api.rest_limits(app)
            known = self._limits[app.id] = (app, limits, TriggerChecker(limits))
        return known

    # -- handlers ----------------------------------------------------------------------------

    async def events(self, request: HttpRequest, app: App, body: bytes) -> object:
        return await self._publish_one(app, body)

    async def batch_events(self, request: HttpRequest, app: App, body: bytes) -> object:
        return await self._publish_batch(app, body)

    async def _publish_one(self, app: App, body: bytes) -> object:
        trigger = parse_trigger_body(body, self._limits_of(app))
        await api.publish(self.node, app, [trigger], source="rest")
        return await api.trigger_info(self.node, app, trigger)

    async def _publish_batch(self, app: App, body: bytes) -> object:
        _, limits, checker = self._checks_of(app)
        triggers = parse_batch(body, limits, checker)
        await api.publish(self.node, app, triggers, source="rest")
        return await api.batch_info(self.node, app, triggers)

    async def channels(self, request: HttpRequest, app: App, body: bytes) -> object:
        prefix = request.query.get("filter_by_prefix", "")
        info = parse_info(request.query.get("info"))
        return {"channels": await api.channels_info(self.node, app, prefix, info)}

    async def channel(self, request: HttpRequest, app: App, body: bytes) -> object:
        info = parse_info(request.query.get("info"))
        return await api.channel_info(self.node, app, request.params["channel"], info)

    async def users(self, request: HttpRequest, app: App, body: bytes) -> object:
        ids = await api.user_ids(self.node, app, request.params["channel"])
        return {"users": [{"id": user_id} for user_id in ids]}

    async def history(self, request: HttpRequest, app: App, body: bytes) -> object:
        query = parse_history_query(request.query.get("since"), request.query.get("limit"))
        return await api.channel_history(self.node, app, request.params["channel"], query)

    async def terminate(self, request: HttpRequest, app: App, body: bytes) -> object:
        await api.terminate_user(self.node, app, request.params["user_id"])
        return {}
