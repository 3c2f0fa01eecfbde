"""Publish-only clients: the Backends of ``Realtime.client(url)``, chosen by the URL's scheme.

- ``redis://``, ``rediss://``, ``unix://``: :class:`~tidings.clients.redis.RedisClient`,
  straight into a Tidings cluster's Redis (``app_id`` required);
- ``http://``, ``https://``: :class:`~tidings.clients.http.HttpClient`, the signed Pusher
  HTTP API of any Pusher-protocol server, ``http://KEY:SECRET@host:port/apps/APP_ID``.

Errors about the URL show it without its user info, query or fragment
(:func:`~tidings.redaction.public_url`): the secret is never echoed.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tidings.backends import Backend
from tidings.redaction import public_url

if TYPE_CHECKING:
    from tidings.clients.http import HttpClient
    from tidings.clients.redis import RedisClient

__all__ = ["HttpClient", "RedisClient", "open_backend"]

# Each client is imported when first used: a WSGI worker publishing through Redis never
# pays for aiohttp's client (half a second of start-up), nor one on HTTP for redis-py.
_HOMES = {"HttpClient": "tidings.clients.http", "RedisClient": "tidings.clients.redis"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tidings.clients' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})
HTTP_SCHEMES = frozenset({"http", "https"})
# ``/apps/{id}`` at the end of the path, after an optional mount path (``/rt/apps/1``).
APP_PATH = re.compile(r"\A(?P<base>(?:/[^/]+)*?)/apps/(?P<app_id>[^/]+)/?\Z")


def open_backend(
    url: str,
    *,
    app_id: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    **options: Any,
) -> Backend:
    """The publish-only Backend for ``url``; ``options`` go to its constructor.

    ``app_id``, ``key`` and ``secret`` fill in what the URL leaves out; when both give one
    they must agree. A Redis client needs only ``app_id`` (the key and secret are for the
    Realtime's auth helpers).
    """
    shown = public_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(f"not a valid URL: {shown}") from None
    scheme = parts.scheme.lower()
    if scheme in REDIS_SCHEMES:
        if not app_id:
            raise ValueError(f"app_id is required to publish through Redis at {shown}")
        from tidings.clients.redis import RedisClient

        return RedisClient(url, app_id, **options)
    if scheme in HTTP_SCHEMES:
        return _http_backend(url, app_id, key, secret, options)
    raise ValueError(
        f"cannot publish to {shown}: the URL must start with redis://, rediss://, unix://, "
        "redis+cluster://, rediss+cluster://, http:// or https://"
    )


def _http_backend(
    url: str, app_id: str | None, key: str | None, secret: str | None, options: dict[str, Any]
) -> HttpClient:
    shown = public_url(url)
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {shown}")
    if parts.query or parts.fragment:
        raise ValueError(f"{shown}: the URL must not have a query or a fragment")
    match = APP_PATH.match(parts.path)
    if parts.path.strip("/") and match is None:
        raise ValueError(f"{shown}: the path must end with /apps/APP_ID")
    url_app_id = unquote(match["app_id"]) if match else None
    url_key = unquote(parts.username) if parts.username else None
    url_secret = unquote(parts.password) if parts.password else None
    app_id = _agree("app_id", url_app_id, app_id, shown, show=True)
    key = _agree("key", url_key, key, shown, show=True)
    secret = _agree("secret", url_secret, secret, shown, show=False)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    base = f"{parts.scheme.lower()}://{netloc}{match['base'] if match else ''}"
    from tidings.clients.http import HttpClient

    return HttpClient(base, app_id, key, secret, **options)


def _agree(name: str, in_url: str | None, given: str | None, shown: str, *, show: bool) -> str:
    """The one value of ``name`` from the URL and the keyword argument."""
    if in_url is not None and given is not None and in_url != given:
        if show:
            raise ValueError(
                f"{name} {given!r} differs from the URL's {in_url!r} ({shown}): give one"
            )
        raise ValueError(f"the secret argument differs from the URL's ({shown}): give one")
    value = in_url if in_url is not None else given
    if not value:
        where = "/apps/APP_ID in the path" if name == "app_id" else "in the URL as KEY:SECRET@"
        raise ValueError(f"{shown}: no {name} (give {name}=..., or put it {where})")
    return value
