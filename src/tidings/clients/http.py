"""The signed Pusher HTTP API, for any Pusher-protocol server: Tidings, Pusher, Soketi, Reverb.

Requests are signed as the pusher server SDKs sign them: ``auth_key``, ``auth_timestamp``,
``auth_version=1.0`` and, when there is a body, ``body_md5``; then ``auth_signature``, the
HMAC-SHA256 of ``METHOD\\nPATH\\nQUERY`` (:func:`~tidings.protocol.auth.rest_string_to_sign`,
the very function the Tidings server checks with).

An error answer becomes :class:`~tidings.backends.PublishError` with the server's status and
message; a server that cannot be reached, or does not answer in time, ``PublishError(503)``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from tidings.backends import Event, PublishError
from tidings.protocol.auth import rest_string_to_sign, sign
from tidings.protocol.channels import USER_CHANNEL_PREFIX
from tidings.redaction import public_url, scrub

DEFAULT_TIMEOUT = 10.0  # seconds for one request, connection included
MAX_ERROR_TEXT = 300  # characters of a non-JSON error body quoted in the PublishError
BATCH_SIZE = 10  # Pusher's limit of events per POST /batch_events
# Channel names use only these and letters and digits, all valid in a path as they are:
# quoting them would make the path sent differ from the path signed on some servers.
PATH_SAFE = "-_=@,.;"


def signed_query(
    key: str,
    secret: str,
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    now: float,
) -> list[tuple[str, str]]:
    """``params`` plus the authentication parameters, ``auth_signature`` last."""
    query = dict(params)
    query.update(auth_key=key, auth_timestamp=str(int(now)), auth_version="1.0")
    if body:
        # Only with a body, as pusher-http-node does: servers that recompute body_md5 from
        # the body (Soketi) leave it out of the signed string for an empty one.
        query["body_md5"] = hashlib.md5(body).hexdigest()
    pairs = sorted(query.items())
    signature = sign(secret, rest_string_to_sign(method, path, pairs))
    return [*pairs, ("auth_signature", signature)]


class HttpClient:
    """The :class:`~tidings.backends.Backend` of ``Realtime.client("http://key:secret@…")``.

    ``base_url`` is the server's URL up to (without) ``/apps/{app_id}``; a path before it
    (Tidings mounted under ``/rt``) is kept and signed.
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        key: str,
        secret: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._app_path = (
            f"{URL(self._base).raw_path.rstrip('/')}/apps/{quote(app_id, safe=PATH_SAFE)}"
        )
        self._origin = str(URL(self._base).origin())
        self._key = key
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpClient({public_url(self._base)!r})"

    async def start(self) -> None:
        """Open the HTTP session on the running loop (aiohttp binds it to that loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the API -----------------------------------------------------------------------------

    async def trigger(self, event: Event) -> dict[str, Any]:
        entry = _entry(event)
        entry["channels"] = list(event.channels)
        answer = await self._request("POST", "/events", body=orjson.dumps(entry))
        # Soketi answers {"ok": true}: keep only what the Pusher API defines.
        return {"channels": answer["channels"]} if "channels" in answer else {}

    async def trigger_batch(self, events: Sequence[Event]) -> dict[str, Any]:
        if any(len(e.channels) != 1 for e in events):
            raise PublishError(400, "every batch event has exactly one channel")
        batch = [{**_entry(e), "channel": e.channels[0]} for e in events]
        answer = await self._request("POST", "/batch_events", body=orjson.dumps({"batch": batch}))
        return {"batch": answer["batch"]} if "batch" in answer else {}

    async def trigger_many(self, events: Sequence[Event]) -> None:
        """One ``POST /batch_events`` per :data:`BATCH_SIZE` events, in order."""
        for start in range(0, len(events), BATCH_SIZE):
            await self.trigger_batch(events[start : start + BATCH_SIZE])

    async def send_to_user(self, user_id: str, name: str, data: str) -> None:
        """An event on the user's ``#server-to-user-`` channel (Pusher's ``sendToUser``)."""
        await self.trigger(Event((USER_CHANNEL_PREFIX + user_id,), name, data))

    async def terminate_user(self, user_id: str) -> None:
        if not user_id:
            raise PublishError(400, "user id missing")
        path = f"/users/{quote(user_id, safe=PATH_SAFE)}/terminate_connections"
        await self._request("POST", path, body=b"{}")

    async def channels(self, prefix: str, info: Sequence[str]) -> dict[str, dict[str, Any]]:
        params = {"filter_by_prefix": prefix} if prefix else {}
        if info:
            params["info"] = ",".join(info)
        answer = await self._request("GET", "/channels", params=params)
        channels: dict[str, dict[str, Any]] = answer.get("channels", {})
        return channels

    async def channel(self, name: str, info: Sequence[str]) -> dict[str, Any]:
        params = {"info": ",".join(info)} if info else {}
        return await self._request("GET", f"/channels/{quote(name, safe=PATH_SAFE)}", params=params)

    async def users(self, channel: str) -> list[str]:
        answer = await self._request("GET", f"/channels/{quote(channel, safe=PATH_SAFE)}/users")
        return [str(user["id"]) for user in answer.get("users", [])]

    async def occupied(self, channels: Sequence[str]) -> set[str]:
        """Every channel, unasked: the Pusher HTTP API answers occupancy one channel per
        request, and the live layer would pay that on every commit. The live layer then
        serializes and publishes every change; servers drop events nobody hears."""
        return set(channels)

    # -- requests ----------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: bytes = b""
    ) -> dict[str, Any]:
        """One signed request; the JSON object answered, or PublishError."""
        await self.start()
        assert self._session is not None
        full_path = self._app_path + path
        query = signed_query(
            self._key, self._secret, method, full_path, params or {}, body, time.time()
        )
        url = URL(self._origin + full_path, encoded=True).with_query(query)
        headers = {"Content-Type": "application/json"} if body else {}
        try:
            async with self._session.request(
                method, url, data=body or None, headers=headers
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = scrub(str(exc) or type(exc).__name__, self._base, also=(self._secret,))
            raise PublishError(503, f"{public_url(self._base)} unreachable: {reason}") from None
        if status >= 300:
            raise PublishError(status, _error_message(raw, status))
        if not raw.strip():
            return {}
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PublishError(502, "the server's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise PublishError(502, "the server's answer is not a JSON object")
        refused = answer.get("code")
        if isinstance(refused, int) and refused >= 400 and isinstance(answer.get("error"), str):
            # Soketi 1.6 sends some refusals (a bad signature) with status 200 and the real
            # status in the body: {"error": "...", "code": 401}.
            raise PublishError(refused, answer["error"])
        return answer


def _entry(event: Event) -> dict[str, Any]:
    """The fields of a trigger body every event has (``channels`` or ``channel`` aside)."""
    entry: dict[str, Any] = {"name": event.name, "data": event.data}
    if event.socket_id is not None:
        entry["socket_id"] = event.socket_id
    if event.info:
        entry["info"] = ",".join(event.info)
    return entry


def _error_message(raw: bytes, status: int) -> str:
    """The server's explanation: ``{"error": …}`` (Tidings, Soketi) or the text (Pusher)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    text = raw.decode(errors="replace").strip()
    if not text:
        return f"HTTP {status}"
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."
