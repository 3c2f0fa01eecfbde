"""Django: ``urlpatterns += urls(rt)``, with Django's own user and CSRF protection.

The user is ``request.user`` (Django's authentication middleware); an anonymous user is
refused with 403. CSRF protection stays on, as for any Django POST view: pusher-js must
send the token, e.g. ``channelAuthorization: {endpoint: "/pusher/auth", headers:
{"X-CSRFToken": getCookie("csrftoken")}}`` and the same under ``userAuthentication``. A
request without it gets Django's CSRF failure response (403, ``CSRF_FAILURE_VIEW``).

``urlpatterns += webhook(rt)`` serves the ``@rt.on`` handlers as the app's webhook URL
(``/pusher/webhook``) when Tidings runs standalone; it is exempt from CSRF, being checked by
its Pusher signature instead.

Live models (``@rt.live``): add ``"tidings.integrations.django.LiveMiddleware"`` to
``MIDDLEWARE`` so a change made by a request skips the connection named by its
``X-Socket-ID`` header. ``urls(rt)`` also serves ``pusher/live-snapshot`` (exempt from CSRF,
signed like a webhook), where a standalone Tidings fetches a live channel's snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse  # type: ignore[import-untyped]
from django.urls import URLPattern, path  # type: ignore[import-untyped]
from django.views.decorators.csrf import (  # type: ignore[import-untyped]
    csrf_exempt,
    csrf_protect,
)
from django.views.decorators.http import require_POST  # type: ignore[import-untyped]

from tidings.authorization import AuthRefused
from tidings.hooks import WebhookRefused, verify_webhook
from tidings.integrations import Integrated, auth_fields, error_body
from tidings.live.model import current_socket_id
from tidings.live.provider import answer_snapshot, socket_id_header

View = Callable[[HttpRequest], HttpResponse]


def _user(request: HttpRequest) -> object:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _fields(request: HttpRequest) -> dict[str, str]:
    """The auth request's fields. Django parses forms itself (its CSRF check reads them
    first, so the raw body is gone by then); JSON is read here."""
    if request.content_type == "application/json":
        return auth_fields(request.content_type, request.body)
    return {key: request.POST[key] for key in request.POST}


def _posted(view: View) -> View:
    """A POST-only view under Django's CSRF protection, whatever MIDDLEWARE holds."""
    protected: View = csrf_protect(require_POST(view))
    return protected


class LiveMiddleware:
    """Sets :data:`tidings.live.current_socket_id` from the ``X-Socket-ID`` header for the
    request, so the live events of its changes are not sent back to that connection."""

    def __init__(self, get_response: View) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = current_socket_id.set(socket_id_header(request.headers.get("X-Socket-ID")))
        try:
            return self.get_response(request)
        finally:
            current_socket_id.reset(token)


def urls(rt: Integrated) -> list[URLPattern]:
    """``pusher/auth`` and ``pusher/user-auth`` for pusher-js, and ``pusher/live-snapshot``
    for a standalone Tidings."""

    def channel_auth(request: HttpRequest) -> HttpResponse:
        try:
            fields = _fields(request)
            answer = rt.authorizer.authenticate_channel(
                _user(request), fields.get("socket_id"), fields.get("channel_name")
            )
        except AuthRefused as refused:
            return JsonResponse(error_body(refused.message), status=refused.status)
        return JsonResponse(answer)

    def user_auth(request: HttpRequest) -> HttpResponse:
        try:
            fields = _fields(request)
            answer = rt.authorizer.authenticate_user(_user(request), fields.get("socket_id"))
        except AuthRefused as refused:
            return JsonResponse(error_body(refused.message), status=refused.status)
        return JsonResponse(answer)

    def live_snapshot(request: HttpRequest) -> HttpResponse:
        status, body = answer_snapshot(
            rt.live_models,
            rt.authorizer.app,
            request.headers.get("X-Pusher-Key"),
            request.headers.get("X-Pusher-Signature"),
            request.body,
        )
        return HttpResponse(body, status=status, content_type="application/json")

    return [
        path("pusher/auth", _posted(channel_auth), name="tidings-auth"),
        path("pusher/user-auth", _posted(user_auth), name="tidings-user-auth"),
        path(
            "pusher/live-snapshot",
            csrf_exempt(require_POST(live_snapshot)),
            name="tidings-live-snapshot",
        ),
    ]


def webhook(rt: Integrated, route: str = "pusher/webhook") -> list[URLPattern]:
    """``route``: a signed Pusher webhook, its events run by the ``@rt.on`` handlers."""

    def receive(request: HttpRequest) -> HttpResponse:
        try:
            events = verify_webhook(
                rt.authorizer.app,
                request.headers.get("X-Pusher-Key"),
                request.headers.get("X-Pusher-Signature"),
                request.body,
            )
        except WebhookRefused as refused:
            return JsonResponse(error_body(refused.message), status=refused.status)
        for event in events:
            rt.hooks.run_sync(event)
        return JsonResponse({})

    return [path(route, csrf_exempt(require_POST(receive)), name="tidings-webhook")]
