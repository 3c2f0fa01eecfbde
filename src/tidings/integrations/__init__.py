"""Framework integrations: pusher-js's auth endpoints and a signed webhook endpoint.

Each module (``flask``, ``django``, ``fastapi``) serves, for one :class:`tidings.Realtime`:

- ``POST /pusher/auth`` and ``POST /pusher/user-auth``, pusher-js's default
  ``channelAuthorization`` and ``userAuthentication`` endpoints, answered by the rules
  declared with ``@rt.authorize``, ``@rt.presence`` and ``@rt.user``;
- ``POST /pusher/webhook`` (``webhook(rt)``), which checks the Pusher signature and runs
  the ``@rt.on`` handlers, so the same handlers work when Tidings runs standalone.

Requests may be form-encoded (what pusher-js sends) or JSON. Refusals are 403 with
``{"error": "..."}``, malformed requests 400, badly signed webhooks 401.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qs

import orjson

from tidings.authorization import Authorizer, AuthRefused
from tidings.hooks import Hooks

MAX_AUTH_BODY = 64 * 1024  # an auth request holds a socket id and a channel name


class Integrated(Protocol):
    """What the integrations use of a :class:`tidings.Realtime`: its auth rules (which
    hold the app's key and secret) and its hooks."""

    @property
    def authorizer(self) -> Authorizer: ...

    @property
    def hooks(self) -> Hooks: ...


def auth_fields(content_type: str | None, body: bytes) -> dict[str, str]:
    """The fields of an auth request: a JSON object, or a form (pusher-js's default)."""
    if len(body) > MAX_AUTH_BODY:
        raise AuthRefused(f"auth request body over {MAX_AUTH_BODY} bytes", 413)
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AuthRefused("the request body is not valid JSON", 400) from None
        if not isinstance(fields, dict):
            raise AuthRefused("the request body must be a JSON object", 400)
        return {k: v for k, v in fields.items() if isinstance(v, str)}
    try:
        form = parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise AuthRefused("the request body is not UTF-8", 400) from None
    return {k: values[0] for k, values in form.items()}


def error_body(message: str) -> dict[str, str]:
    return {"error": message}
