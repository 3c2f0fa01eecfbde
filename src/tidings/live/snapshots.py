"""Snapshots of live channels under ``tidings serve``: asked of the app over HTTP.

The standalone server has no models: each app that uses live channels gives the URL of its
integration's snapshot route (``live_snapshot_url`` in ``[[apps]]``). For every socket that
subscribes to a ``private-live.`` channel, :class:`HttpSnapshots` POSTs
``{"channel": ..., "socket_id": ...}`` there, signed as Tidings signs webhooks
(``X-Pusher-Key``, and ``X-Pusher-Signature``: the HMAC-SHA256 hex of the raw body with the
app's secret), and the app answers 200 with ``{"rows": [...], "version": V}``.

Everything that goes wrong becomes :class:`~tidings.core.live_hold.SnapshotFailed`, whose
message reaches the client: it names the cause (status, size, unreachable), never the
URL or anything signed. The server log has the URL, without its credentials. A timeout
stays a ``TimeoutError``: the node says so to the client and counts it as one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aiohttp
import orjson

from tidings.core.apps import App
from tidings.core.live_hold import SnapshotFailed
from tidings.core.webhooks import signature
from tidings.redaction import public_url, scrub

log = logging.getLogger("tidings.live")

READ_CHUNK = 65536


class HttpSnapshots:
    """The node's snapshot provider (``node.live_snapshots``) for apps with a
    ``live_snapshot_url``: ``await provider(app, channel, socket_id)`` is the body."""

    def __init__(self, apps: Iterable[App]) -> None:
        self._urls = {app.id: app.live_snapshot_url for app in apps if app.live_snapshot_url}
        self._session: aiohttp.ClientSession | None = None

    @property
    def app_ids(self) -> frozenset[str]:
        """The apps this provider serves (``node.live_apps``)."""
        return frozenset(self._urls)

    async def start(self) -> None:
        """Open the HTTP session on the running loop (aiohttp binds it to that loop)."""
        if self._session is None:
            # No total timeout here: each request gets its app's live_snapshot_timeout.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __call__(self, app: App, channel: str, socket_id: str) -> bytes:
        url = self._urls.get(app.id)
        if url is None:
            raise SnapshotFailed(f"app {app.id} has no live_snapshot_url")
        await self.start()
        assert self._session is not None
        body = orjson.dumps({"channel": channel, "socket_id": socket_id})
        headers = {
            "Content-Type": "application/json",
            "X-Pusher-Key": app.key,
            "X-Pusher-Signature": signature(app.secret, body),
        }
        timeout = aiohttp.ClientTimeout(total=app.live_snapshot_timeout)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    self._warn(app, url, f"answered HTTP {response.status}")
                    raise SnapshotFailed(f"the app's snapshot endpoint answered {response.status}")
                return await _read_capped(response, app.live_snapshot_max_bytes)
        except TimeoutError:
            raise  # the node's to report; aiohttp's timeouts are ClientErrors too
        except aiohttp.ClientError as exc:
            reason = scrub(str(exc) or type(exc).__name__, url, also=(app.secret,))
            self._warn(app, url, f"unreachable: {reason}")
            raise SnapshotFailed("the app's snapshot endpoint is unreachable") from None

    def _warn(self, app: App, url: str, what: str) -> None:
        log.warning("live snapshot URL of app %s (%s) %s", app.id, public_url(url), what)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass ``limit`` bytes (never read whole)."""
    too_large = SnapshotFailed(f"snapshot larger than {limit} bytes")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
