"""FastAPI: ``app.include_router(router(rt, user=Depends(current_user)))``.

``user`` is a dependency giving the signed-in user, or None (the request is then refused
with 403). Add ``app.include_router(webhook(rt))`` to serve the ``@rt.on`` handlers as the
app's webhook URL (``/pusher/webhook``) when Tidings runs standalone.

Live models: ``app.add_middleware(LiveMiddleware)`` reads each request's ``X-Socket-ID``
header into :data:`tidings.live.current_socket_id` (their events skip that connection);
``router(...)`` also serves ``POST /pusher/live-snapshot`` for a standalone Tidings.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.authorization import AuthRefused
from tidings.hooks import WebhookRefused, verify_webhook
from tidings.integrations import Integrated, auth_fields, error_body
from tidings.live.model import current_socket_id
from tidings.live.provider import aanswer_snapshot, socket_id_header


class LiveMiddleware:
    """ASGI middleware: :data:`tidings.live.current_socket_id` from ``X-Socket-ID`` for the
    request (sync endpoints, run in a thread, get a copy of the context)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"x-socket-id"), None)
        value = socket_id_header(header.decode("latin-1") if header is not None else None)
        token = current_socket_id.set(value)
        try:
            await self.app(scope, receive, send)
        finally:
            current_socket_id.reset(token)


def router(rt: Integrated, user: Any) -> APIRouter:
    """``POST /pusher/auth`` and ``POST /pusher/user-auth`` for pusher-js, ``POST
    /pusher/live-snapshot`` for a standalone Tidings; ``user`` is a ``Depends(...)``."""
    routes = APIRouter()

    async def channel_auth(request: Request, current: Any = user) -> JSONResponse:
        try:
            fields = auth_fields(request.headers.get("content-type"), await request.body())
            answer = await rt.authorizer.aauthenticate_channel(
                current, fields.get("socket_id"), fields.get("channel_name")
            )
        except AuthRefused as refused:
            return JSONResponse(error_body(refused.message), refused.status)
        return JSONResponse(answer)

    async def user_auth(request: Request, current: Any = user) -> JSONResponse:
        try:
            fields = auth_fields(request.headers.get("content-type"), await request.body())
            answer = await rt.authorizer.aauthenticate_user(current, fields.get("socket_id"))
        except AuthRefused as refused:
            return JSONResponse(error_body(refused.message), refused.status)
        return JSONResponse(answer)

    async def live_snapshot(request: Request) -> Response:
        status, body = await aanswer_snapshot(
            rt.live_models,
            rt.authorizer.app,
            request.headers.get("x-pusher-key"),
            request.headers.get("x-pusher-signature"),
            await request.body(),
        )
        return Response(body, status, media_type="application/json")

    routes.add_api_route("/pusher/auth", channel_auth, methods=["POST"])
    routes.add_api_route("/pusher/live-snapshot", live_snapshot, methods=["POST"])
    routes.add_api_route("/pusher/user-auth", user_auth, methods=["POST"])
    return routes


def webhook(rt: Integrated, path: str = "/pusher/webhook") -> APIRouter:
    """``POST path``: a signed Pusher webhook, its events run by the ``@rt.on`` handlers."""
    routes = APIRouter()

    async def receive(request: Request) -> JSONResponse:
        try:
            events = verify_webhook(
                rt.authorizer.app,
                request.headers.get("x-pusher-key"),
                request.headers.get("x-pusher-signature"),
                await request.body(),
            )
        except WebhookRefused as refused:
            return JSONResponse(error_body(refused.message), refused.status)
        for event in events:
            await rt.hooks.run(event)
        return JSONResponse({})

    routes.add_api_route(path, receive, methods=["POST"])
    return routes
