"""Credentials kept out of what people read: logs, metrics labels and configuration errors.

A URL can carry a credential in three places: its user info (``https://user:pass@host``),
its query (``?token=...``) and its fragment. Wherever Tidings shows a URL it shows only the
scheme, host, port and path (:func:`public_url`); text that may quote a URL, such as an
HTTP client's error message, goes through :func:`scrub` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

REDACTED = "[redacted]"
UNPARSABLE = "(unparsable URL, not shown)"
# Query values and passwords shorter than this are not searched for on their own (only as
# part of the whole query or user info): replacing every "1" or "x" would garble the text.
MIN_SECRET_LENGTH = 4


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: each may carry a credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal: nothing of it can be trusted to show
        return UNPARSABLE
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port is not None:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}{parts.path}"


def scrub(text: str, url: str | None, also: Iterable[str] = ()) -> str:
    """``text`` with ``url`` shown as :func:`public_url`, its credentials and ``also``
    (say, header values) removed.

    For messages written by libraries (aiohttp, redis-py) that may quote the URL or the
    headers they were given, in full or re-encoded.
    """
    secrets = {s for s in also if len(s) >= MIN_SECRET_LENGTH}
    if url:
        text = text.replace(url, public_url(url))
        secrets |= _secrets(url)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secrets(url: str) -> set[str]:
    """The credential-bearing pieces of ``url``, raw and percent-decoded."""
    netloc, query, fragment = _pieces(url)
    userinfo = netloc.rpartition("@")[0] if "@" in netloc else ""
    pieces = {userinfo, query, fragment}
    _, _, password = userinfo.partition(":")
    values = [pair.partition("=")[2] for pair in query.replace(";", "&").split("&")]
    pieces.update(c for c in [password, *values] if len(c) >= MIN_SECRET_LENGTH)
    found = set()
    for piece in pieces:
        found.update({piece, unquote(piece), unquote_plus(piece)})
    found.discard("")
    return found


def _pieces(url: str) -> tuple[str, str, str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        # Split by hand: urlsplit refuses some malformed hosts, and their URLs still
        # hold credentials.
        rest = url.partition("://")[2]
        netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        after = rest[len(netloc) :]
        before_fragment, _, fragment = after.partition("#")
        return netloc, before_fragment.partition("?")[2], fragment
    return parts.netloc, parts.query, parts.fragment
