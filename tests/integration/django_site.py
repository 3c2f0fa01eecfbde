"""A Django project in one module: settings, a middleware standing for the app's login, and
the URLconf with ``tidings.integrations.django.urls(rt)`` and ``webhook(rt)``.

``configure(rt)`` sets Django up once per process and points the URLconf at ``rt``. The
signed-in user comes from the ``X-User`` header (Django's ``AnonymousUser`` without it), so
the views see ``request.user`` exactly as behind ``AuthenticationMiddleware``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.urls import URLPattern, clear_url_caches, path

urlpatterns: list[URLPattern] = []


class HeaderUser:
    """``request.user``: a user named by ``X-User``, else Django's anonymous user."""

    def __init__(self, name: str) -> None:
        self.username = name
        self.is_authenticated = True

    def __str__(self) -> str:
        return self.username


def header_login(get_response: Callable[[HttpRequest], HttpResponse]) -> Any:
    from django.contrib.auth.models import AnonymousUser

    def middleware(request: HttpRequest) -> HttpResponse:
        name = request.headers.get("X-User")
        request.user = HeaderUser(name) if name else AnonymousUser()
        return get_response(request)

    return middleware


def csrf_token(request: HttpRequest) -> HttpResponse:
    """What a page would do: give the browser its CSRF cookie and token."""
    return JsonResponse({"token": get_token(request)})


def configure(rt: Any) -> None:
    """Set Django up (once) and serve ``rt``'s endpoints from this module's URLconf."""
    from tidings.integrations import django as tidings_django

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tidings-test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
            MIDDLEWARE=[
                "django.middleware.csrf.CsrfViewMiddleware",
                f"{__name__}.header_login",
            ],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()
    urlpatterns[:] = [
        *tidings_django.urls(rt),
        *tidings_django.webhook(rt),
        path("csrf", csrf_token),
    ]
    clear_url_caches()
