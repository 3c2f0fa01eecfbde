"""Framework integrations: pusher-js's auth endpoints and a signed webhook endpoint.

Each module (``flask``, ``django``, ``fastapi``) serves, for one :class:`tidings.Realtime`:

- ``POST /pusher/auth`` and ``POST /pusher/user-auth``, pusher-js's default
  ``channelAuthorization`` and ``userAuthentication`` endpoints, answered by the rules
  declared with ``@rt.authorize``, ``@rt.presence`` and ``@rt.user``;
- ``POST /pusher/webhook`` (``webhook(rt)``), which checks the Pusher signature and runs
  the ``@rt.on`` handlers, so the same handlers work when Tidings runs standalone;
- ``POST /pusher/live-snapshot``, signed like a webhook, answering a standalone Tidings with
  the snapshot of a ``private-live.`` channel (``@rt.live``; see docs/live.md);
- the request's ``X-Socket-ID`` header as :data:`tidings.live.current_socket_id`, so that a
  live model's events skip the connection whose request made the change.

Requests may be form-encoded (what pusher-js sends) or JSON. Refusals are 403 with
``{"error": "..."}``, malformed requests 400, badly signed webhooks 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

import orjson

from tidings.authorization import Authorizer, AuthRefused
from tidings.hooks import Hooks

if TYPE_CHECKING:
    from tidings.live.provider import LiveModels

MAX_AUTH_BODY = 64 * 1024  # an auth request holds a socket id and a channel name


class Integrated(Protocol):
    """What the integrations use of a :class:`tidings.Realtime`: its auth rules (which
    hold the app's key and secret) and its hooks."""

    @property
    def authorizer(self) -> Authorizer: ...

    @property
    def hooks(self) -> Hooks: ...

    @property
    def live_models(self) -> LiveModels: ...


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
