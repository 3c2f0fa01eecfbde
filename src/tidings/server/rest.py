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
from typing import Any

import orjson
from aiohttp import web

from tidings.core.apps import App
from tidings.node import BackendRateLimited, ClusterUnavailable, Node
from tidings.protocol.auth import rest_request_error
from tidings.protocol.channels import channel_type, name_error
from tidings.protocol.rest import RestError, RestLimits, Trigger, parse_batch, parse_info
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


def _limits(app: App) -> RestLimits:
    return RestLimits(
        max_event_payload_bytes=app.max_event_payload_bytes,
        max_event_name_length=app.max_event_name_length,
        max_channel_name_length=app.max_channel_name_length,
        max_channels_per_event=app.max_channels_per_event,
        max_batch_size=app.max_batch_size,
    )


class RestApi:
    def __init__(self, node: Node, max_request_body: int) -> None:
        self.node = node
        self.max_request_body = max_request_body

    def endpoints(self) -> list[Route]:
        """The API's routes, for any server (see ``server/http_edge.py``)."""
        return [
            Route("POST", "/apps/{app_id}/events", self._wrap(self.events)),
            Route("POST", "/apps/{app_id}/batch_events", self._wrap(self.batch_events)),
            Route("GET", "/apps/{app_id}/channels", self._wrap(self.channels)),
            Route("GET", "/apps/{app_id}/channels/{channel}", self._wrap(self.channel)),
            Route("GET", "/apps/{app_id}/channels/{channel}/users", self._wrap(self.users)),
            Route(
                "POST",
                "/apps/{app_id}/users/{user_id}/terminate_connections",
                self._wrap(self.terminate),
            ),
            # pusher-http-python posts here, without /apps/{id}; the app comes from auth_key.
            Route("POST", "/users/{user_id}/terminate_connections", self._wrap(self.terminate)),
        ]

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

    # -- handlers ----------------------------------------------------------------------------

    async def events(self, request: HttpRequest, app: App, body: bytes) -> object:
        trigger = parse_trigger_body(body, _limits(app))
        await self.node.check_backend_rate(app, 1)
        await self.node.trigger(app, trigger)
        return await self._trigger_info(app, trigger)

    async def batch_events(self, request: HttpRequest, app: App, body: bytes) -> object:
        triggers = parse_batch(body, _limits(app))
        await self.node.check_backend_rate(app, len(triggers))
        for trigger in triggers:
            await self.node.trigger(app, trigger)
        if not any(t.info for t in triggers):
            return {}
        infos = []
        for trigger in triggers:
            info = await self._trigger_info(app, trigger)
            infos.append(info.get("channels", {}).get(trigger.channels[0], {}))
        return {"batch": infos}

    async def _trigger_info(self, app: App, trigger: Trigger) -> dict[str, Any]:
        if not trigger.info:
            return {}
        channels: dict[str, dict[str, int]] = {}
        for channel in trigger.channels:
            channels[channel] = await self._attributes(app, channel, trigger.info, strict=False)
        return {"channels": channels}

    async def _attributes(
        self, app: App, channel: str, info: tuple[str, ...], strict: bool
    ) -> dict[str, Any]:
        presence = channel_type(channel).is_presence
        result: dict[str, Any] = {}
        if "user_count" in info:
            if presence:
                result["user_count"] = len(await self.node.members(app, channel))
            elif strict:
                raise RestError(400, "user_count is available only for presence channels")
        if "subscription_count" in info:
            # Pusher counts subscriptions on every channel kind, presence included (its SDKs
            # ask for user_count and subscription_count together on presence channels).
            result["subscription_count"] = await self.node.subscription_count(app, channel)
        return result

    async def channels(self, request: HttpRequest, app: App, body: bytes) -> object:
        prefix = request.query.get("filter_by_prefix", "")
        info = parse_info(request.query.get("info"))
        if "user_count" in info and not prefix.startswith("presence-"):
            raise RestError(400, "info=user_count needs filter_by_prefix=presence-")
        channels = await self.node.channels(app, prefix)
        result: dict[str, dict[str, Any]] = {}
        for name, count in sorted(channels.items()):
            attributes: dict[str, Any] = {}
            if "user_count" in info and channel_type(name).is_presence:
                attributes["user_count"] = len(await self.node.members(app, name))
            if "subscription_count" in info:
                attributes["subscription_count"] = count
            result[name] = attributes
        return {"channels": result}

    async def channel(self, request: HttpRequest, app: App, body: bytes) -> object:
        channel = self._channel_name(request, app)
        info = parse_info(request.query.get("info"))
        count = await self.node.subscription_count(app, channel)
        result: dict[str, Any] = {"occupied": count > 0}
        result.update(await self._attributes(app, channel, info, strict=True))
        if "cache" in info:
            if not channel_type(channel).cache:
                raise RestError(400, "cache is available only for cache channels")
            cached = await self.node.cached(app, channel)
            if cached is not None:
                message = orjson.loads(cached.message)
                ttl = max(0, int(cached.expires_at - self.node.clock()))
                result["cache"] = {
                    "event": message.get("event"),
                    "data": message.get("data"),
                    "ttl": ttl,
                }
        return result

    async def users(self, request: HttpRequest, app: App, body: bytes) -> object:
        channel = self._channel_name(request, app)
        if not channel_type(channel).is_presence:
            raise RestError(400, "users are available only for presence channels")
        return {"users": [{"id": m.user_id} for m in await self.node.members(app, channel)]}

    async def terminate(self, request: HttpRequest, app: App, body: bytes) -> object:
        user_id = request.params["user_id"]
        if not user_id:
            raise RestError(400, "user id missing")
        await self.node.terminate_user(app, user_id)
        return {}

    def _channel_name(self, request: HttpRequest, app: App) -> str:
        channel = request.params["channel"]
        problem = name_error(channel, app.max_channel_name_length)
        if problem is not None:
            raise RestError(400, f"invalid channel: {problem}")
        return channel
