"""``GET /tidings.js``: the live-collection helper, served by Tidings itself (no CDN).

The file is package data (``tidings/static/tidings.js``), read once. Browsers revalidate it
on every load (``Cache-Control: no-cache``) and get a bodiless 304 while its ETag (a hash of
the content) still matches, so an upgraded server is never shadowed by a cached old script.
Written against ``server/http_edge.py``: the same route serves ``tidings serve`` (aiohttp)
and ``rt.asgi()``.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from tidings.server.http_edge import HttpRequest, HttpResponse, Responder, Route

SCRIPT_PATH = "/tidings.js"
CONTENT_TYPE = "application/javascript"


@functools.cache
def script() -> tuple[bytes, str]:
    """The script's bytes and its ETag."""
    body = resources.files("tidings").joinpath("static/tidings.js").read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag, compared weakly (``W/`` ignored)."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def serve(request: HttpRequest, responder: Responder) -> None:
    body, etag = script()
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("If-None-Match"), etag):
        await responder.respond(HttpResponse(304, b"", None, headers))
    else:
        await responder.respond(HttpResponse(200, body, CONTENT_TYPE, headers))


def endpoints() -> list[Route]:
    return [Route("GET", SCRIPT_PATH, serve)]
