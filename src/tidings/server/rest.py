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
from typing import Literal

from aiohttp import web

from tidings import api
from tidings.brokers.history import HistoryUnavailable
from tidings.core.apps import App
from tidings.node import BackendRateLimited, ClusterUnavailable, Node
from tidings.protocol.auth import rest_request_error
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

    async def answer_publish(
        self, request: HttpRequest, endpoint: Literal["events", "batch_events"]
    ) -> HttpResponse:
        """``events`` or ``batch_events`` answered, for the lean path (server/lean_http.py):
        the same checks, errors and publish as their routes."""
        handler = self.events if endpoint == "events" else self.batch_events
        return await self._answer(request, handler)

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
        except RestError as exc:
            return json_error(exc.status, exc.message)
        except BackendRateLimited as exc:
            return json_error(429, str(exc))
        except ClusterUnavailable as exc:
            error = json_error(503, f"{exc}: event not published, retry later")
            return HttpResponse(error.status, error.body, headers={"Retry-After": RETRY_AFTER})
        except HistoryUnavailable as exc:
            error = json_error(503, f"{exc}: retry later")
            return HttpResponse(error.status, error.body, headers={"Retry-After": RETRY_AFTER})
        return json_response(result)

    async def _body(self, request: HttpRequest) -> bytes:
        body = await request.read_body(self.max_request_body)
        if body is None:
            raise RestError(413, f"request body larger than {self.max_request_body} bytes")
        return body

    def _authenticate(self, request: HttpRequest, body: bytes) -> App:
        app_id = request.params.get("app_id")
        key = request.query.get("auth_key")
        if app_id is not None:
            app = self.node.apps.by_id(app_id)
        else:
            app = self.node.apps.by_key(key) if key else None
        if app is None or key != app.key:
            # One answer whether the id or the key is wrong: a 404 for unknown ids would let
            # anyone list the app ids a server holds.
            raise RestError(401, UNKNOWN_APP_OR_KEY)
        query = request.query_items
        problem = rest_request_error(
            app.secret, request.method, request.path, query, body, time.time()
        )
        if problem is not None and request.raw_path != request.path:
            problem = rest_request_error(
                app.secret, request.method, request.raw_path, query, body, time.time()
            )
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
        trigger = parse_trigger_body(body, self._limits_of(app))
        await api.publish(self.node, app, [trigger], source="rest")
        return await api.trigger_info(self.node, app, trigger)

    async def batch_events(self, request: HttpRequest, app: App, body: bytes) -> object:
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
