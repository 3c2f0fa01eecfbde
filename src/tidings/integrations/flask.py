"""Flask: ``app.register_blueprint(blueprint(rt, user=lambda: current_user))``.

``user()`` returns the signed-in user, or None (the request is then refused with 403). Add
``app.register_blueprint(webhook(rt))`` to serve the ``@rt.on`` handlers as the app's
webhook URL (``/pusher/webhook``) when Tidings runs standalone. Async handlers run to
completion in the request's thread.

The blueprint also reads every request's ``X-Socket-ID`` header into
:data:`tidings.live.current_socket_id` (live models skip that connection) and serves
``POST /pusher/live-snapshot``, where a standalone Tidings fetches a live channel's snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request

from tidings.authorization import AuthRefused
from tidings.hooks import WebhookRefused, verify_webhook
from tidings.integrations import Integrated, auth_fields, error_body
from tidings.live.model import current_socket_id
from tidings.live.provider import answer_snapshot, socket_id_header


def blueprint(rt: Integrated, user: Callable[[], object], name: str = "tidings_auth") -> Blueprint:
    """``POST /pusher/auth`` and ``POST /pusher/user-auth`` for pusher-js, ``POST
    /pusher/live-snapshot`` for a standalone Tidings, and ``X-Socket-ID`` for every request."""
    routes = Blueprint(name, __name__)

    @routes.before_app_request
    def live_socket_id() -> None:
        current_socket_id.set(socket_id_header(request.headers.get("X-Socket-ID")))

    @routes.teardown_app_request
    def live_socket_id_done(error: BaseException | None) -> None:
        current_socket_id.set(None)

    @routes.post("/pusher/live-snapshot")
    def live_snapshot() -> Response:
        status, body = answer_snapshot(
            rt.live_models,
            rt.authorizer.app,
            request.headers.get("X-Pusher-Key"),
            request.headers.get("X-Pusher-Signature"),
            request.get_data(),
        )
        return Response(body, status=status, mimetype="application/json")

    @routes.post("/pusher/auth")
    def channel_auth() -> tuple[Response, int]:
        try:
            fields = auth_fields(request.content_type, request.get_data())
            answer = rt.authorizer.authenticate_channel(
                user(), fields.get("socket_id"), fields.get("channel_name")
            )
        except AuthRefused as refused:
            return jsonify(error_body(refused.message)), refused.status
        return jsonify(answer), 200

    @routes.post("/pusher/user-auth")
    def user_auth() -> tuple[Response, int]:
        try:
            fields = auth_fields(request.content_type, request.get_data())
            answer = rt.authorizer.authenticate_user(user(), fields.get("socket_id"))
        except AuthRefused as refused:
            return jsonify(error_body(refused.message)), refused.status
        return jsonify(answer), 200

    return routes


def webhook(
    rt: Integrated, path: str = "/pusher/webhook", name: str = "tidings_webhook"
) -> Blueprint:
    """``POST path``: a signed Pusher webhook, its events run by the ``@rt.on`` handlers."""
    routes = Blueprint(name, __name__)

    @routes.post(path)
    def receive() -> tuple[Response, int]:
        try:
            events = verify_webhook(
                rt.authorizer.app,
                request.headers.get("X-Pusher-Key"),
                request.headers.get("X-Pusher-Signature"),
                request.get_data(),
            )
        except WebhookRefused as refused:
            return jsonify(error_body(refused.message)), refused.status
        for event in events:
            rt.hooks.run_sync(event)
        return jsonify({}), 200

    return routes
