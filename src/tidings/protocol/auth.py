"""HMAC-SHA256 signatures: channel auth, user sign-in, and REST request signing.

Every comparison of a signature goes through :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import operator
from collections.abc import Iterable

# Pusher HTTP API: "auth_timestamp ... within 600 seconds of the current time".
TIMESTAMP_WINDOW = 600.0
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


@functools.lru_cache(maxsize=64)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret``, copied for each message: the key is hashed
    into its pads once per app rather than once per signed request."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def sign(secret: str, message: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(message.encode())
    return mac.hexdigest()


def _matches(key: str, secret: str, message: str, auth: object) -> bool:
    """``auth`` is ``"<key>:<hex signature of message>"``."""
    if not isinstance(auth, str):
        return False
    given_key, sep, signature = auth.partition(":")
    if not sep:
        return False
    expected = sign(secret, message)
    key_ok = hmac.compare_digest(given_key.encode(), key.encode())
    sig_ok = hmac.compare_digest(signature.encode(), expected.encode())
    return key_ok and sig_ok


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None) -> str:
    """``socket_id:channel``, plus ``:channel_data`` when the subscribe carries one."""
    message = f"{socket_id}:{channel}"
    if channel_data is not None:
        message = f"{message}:{channel_data}"
    return message


def channel_auth_ok(
    key: str, secret: str, socket_id: str, channel: str, auth: object, channel_data: str | None
) -> bool:
    """Private channels sign ``socket_id:channel``; presence adds ``:channel_data``."""
    return _matches(key, secret, channel_string_to_sign(socket_id, channel, channel_data), auth)


# The client's auth string is quoted back in the refusal; this bounds the echo.
MAX_ECHOED_AUTH = 100


def _echo(value: object) -> str:
    """A client-sent value for an error message, cut to MAX_ECHOED_AUTH characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHOED_AUTH else text[:MAX_ECHOED_AUTH] + "..."


def channel_auth_error(
    key: str, secret: str, socket_id: str, channel: str, auth: object, channel_data: str | None
) -> str | None:
    """Why a channel signature is refused, or None when it is valid.

    The wording is the hosted Pusher service's ("Invalid signature: Expected HMAC SHA256
    hex digest of <string>, but got <signature>"), which its troubleshooting pages explain.
    Naming the string the server signed lets a developer compare it with what the auth
    endpoint signed; the message never contains the secret or the expected HMAC.
    """
    message = channel_string_to_sign(socket_id, channel, channel_data)
    if _matches(key, secret, message, auth):
        return None
    given_key, sep, signature = auth.partition(":") if isinstance(auth, str) else ("", "", "")
    if not sep or given_key != key:
        # The app key is public (every client connects with it); naming it is no leak.
        return (
            f"Invalid key in subscription auth data: '{_echo(given_key or auth)}'; "
            f"auth must be '{key}:' and the HMAC SHA256 hex digest of {message}"
        )
    return (
        f"Invalid signature: Expected HMAC SHA256 hex digest of {message}, "
        f"but got {_echo(signature)}"
    )


def user_auth_ok(key: str, secret: str, socket_id: str, user_data: str, auth: object) -> bool:
    """User sign-in signs ``socket_id::user::user_data``."""
    return _matches(key, secret, f"{socket_id}::user::{user_data}", auth)


def user_auth_error(
    key: str, secret: str, socket_id: str, user_data: str, auth: object
) -> str | None:
    """Why a ``pusher:signin`` signature is refused, or None when it is valid.

    Worded like :func:`channel_auth_error`: the string the server signed, never the secret
    or the expected HMAC, so that a developer can compare it with what the user
    authentication endpoint signed (a missing ``::user::`` is the usual mistake)."""
    message = f"{socket_id}::user::{user_data}"
    if _matches(key, secret, message, auth):
        return None
    if not isinstance(auth, str) or not auth:
        return f"signin needs auth: '{key}:' and the HMAC SHA256 hex digest of {message}"
    given_key, sep, signature = auth.partition(":")
    if not sep or given_key != key:
        return (
            f"Invalid key in signin auth: '{_echo(given_key or auth)}'; "
            f"auth must be '{key}:' and the HMAC SHA256 hex digest of {message}"
        )
    return (
        f"Invalid signature: Expected HMAC SHA256 hex digest of {message}, "
        f"but got {_echo(signature)}"
    )


def rest_string_to_sign(method: str, path: str, query: Iterable[tuple[str, str]]) -> str:
    """METHOD\\nPATH\\nQS: every parameter but auth_signature, keys lower-cased and sorted,
    joined as ``k=v`` with ``&`` and not URL-escaped (pusher-http-* sign it this way)."""
    return _string_to_sign(method, path, [(k.lower(), v) for k, v in query])


_KEY = operator.itemgetter(0)


def _string_to_sign(method: str, path: str, lowered: list[tuple[str, str]]) -> str:
    """:func:`rest_string_to_sign` of a query whose keys are lower-cased already."""
    pairs = [pair for pair in lowered if pair[0] != "auth_signature"]
    pairs.sort(key=_KEY)  # stable: repeated names keep their order, as they were sent
    return f"{method.upper()}\n{path}\n" + "&".join([f"{k}={v}" for k, v in pairs])


def rest_request_error(
    secret: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: bytes,
    now: float,
) -> str | None:
    """Why a signed REST request fails authentication (HTTP 401), or None when it passes.

    ``body_md5`` is checked whenever it is present or the body is non-empty (the Python
    SDK sends it on GET requests too, as the MD5 of the empty body).
    """
    lowered = [(k.lower(), v) for k, v in query]
    params: dict[str, str] = {}
    for k, v in lowered:
        params.setdefault(k, v)
    for required in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if required not in params:
            return f"missing {required} query parameter"
    if params["auth_version"] != "1.0":
        return "auth_version must be 1.0"
    stamp = params["auth_timestamp"]
    # ASCII only: str.isdigit() also accepts digits int() cannot read ("²", "⓪").
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        return "auth_timestamp must be an integer"
    if abs(now - int(stamp)) > TIMESTAMP_WINDOW:
        return f"auth_timestamp is more than {int(TIMESTAMP_WINDOW)} s from the server time"
    if body or "body_md5" in params:
        actual = hashlib.md5(body).hexdigest()
        if not hmac.compare_digest(params.get("body_md5", "").encode(), actual.encode()):
            return "body_md5 does not match the request body"
    string_to_sign = _string_to_sign(method, path, lowered)
    given = params["auth_signature"]
    if not hmac.compare_digest(given.encode(), sign(secret, string_to_sign).encode()):
        # Pusher's 401 body spells out the string it signed (JSON-quoted, so the newlines
        # show as \n). The string holds only request parameters, never the secret.
        return (
            f"Invalid signature: you should have sent HmacSHA256Hex({json.dumps(string_to_sign)},"
            f" your_secret_key), but you sent {json.dumps(_echo(given))}"
        )
    return None
