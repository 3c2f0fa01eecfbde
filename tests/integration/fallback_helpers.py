"""Raw-HTTP clients of pusher-js's HTTP fallbacks (pusher-js ``core/http/http_socket.ts``;
reference section 2.3): a session driven by hand, its frames parsed strictly.

A session is ``/pusher/app/{key}/{server}/{session}``; receive requests are
``.../xhr_streaming`` (one long chunked response) or ``.../xhr`` (long polls), sends are
``.../xhr_send`` with a JSON array of strings. Every frame is one line: ``o``, ``h``,
``a[...]`` (Pusher messages as JSON strings) or ``c[code,"reason"]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from pusher_helpers import QUERY, TIMEOUT

APP_KEY = "app-key"
SOCKET_ID = re.compile(r"^\d+\.\d+$")
PRELUDE = b"h" * 2048 + b"\n"
SUBSCRIPTION_COUNT = "pusher_internal:subscription_count"
PING = {"event": "pusher:ping", "data": "{}"}

# One parsed frame: ("o", None), ("h", None), ("a", [message, ...]) or ("c", [code, reason]).
Frame = tuple[str, Any]


def parse_frame(line: bytes) -> Frame:
    """One newline-terminated frame; anything pusher-js would not read fails the test."""
    assert line.endswith(b"\n"), f"frame not terminated by a newline: {line!r}"
    body = line[:-1]
    assert body, "empty frame"
    kind = chr(body[0])
    if kind in ("o", "h"):
        assert body == kind.encode(), f"unexpected bytes after {kind!r}: {line!r}"
        return kind, None
    if kind == "a":
        strings = json.loads(body[1:])
        assert isinstance(strings, list) and strings, line
        assert all(isinstance(s, str) for s in strings), f"a[...] must hold strings: {line!r}"
        messages = [json.loads(s) for s in strings]
        assert all(isinstance(m, dict) for m in messages), line
        return "a", messages
    if kind == "c":
        payload = json.loads(body[1:])
        assert isinstance(payload, list) and len(payload) == 2, line
        assert isinstance(payload[0], int) and isinstance(payload[1], str), line
        return "c", payload
    raise AssertionError(f"unknown frame type {kind!r}: {line!r}")


def parse_body(body: bytes) -> list[Frame]:
    assert body.endswith(b"\n"), f"body not terminated by a newline: {body!r}"
    return [parse_frame(line + b"\n") for line in body[:-1].split(b"\n")]


def session_path() -> str:
    """``{server}/{session}`` as pusher-js picks them: 0-999 and 8 base-32 characters."""
    session = "".join(random.choices("0123456789abcdefghijklmnopqrstuv", k=8))
    return f"{random.randrange(1000)}/{session}"


def established_socket_id(message: dict[str, Any]) -> str:
    assert message.get("event") == "pusher:connection_established", message
    assert isinstance(message.get("data"), str), message
    data = json.loads(message["data"])
    assert SOCKET_ID.match(data["socket_id"]), data
    socket_id: str = data["socket_id"]
    return socket_id


class Reply:
    """A finished HTTP response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Stream:
    """An open ``xhr_streaming`` response, read one frame (line) at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def line(self, timeout: float = TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            line = await self.response.content.readline()
        assert line, "the streaming response ended"
        return line

    async def frame(self, timeout: float = TIMEOUT) -> Frame:
        return parse_frame(await self.line(timeout))

    async def messages(self, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The messages of the next ``a`` frame, skipping heartbeats."""
        async with asyncio.timeout(timeout):
            while True:
                kind, value = await self.frame(timeout)
                if kind == "h":
                    continue
                assert kind == "a", (kind, value)
                messages: list[dict[str, Any]] = value
                return messages

    async def ended(self, timeout: float = TIMEOUT) -> bool:
        async with asyncio.timeout(timeout):
            return await self.response.content.read() == b""


class FallbackSession:
    """One pusher-js HTTP session driven by hand."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        http_url: str,
        key: str = APP_KEY,
        query: str = QUERY,
        origin: str | None = None,
        path: str | None = None,
    ) -> None:
        """``path``: ``{server}/{session}`` (default: a new one, as pusher-js picks it)."""
        self.http = http
        self.path = path or session_path()
        self.base = f"{http_url}/pusher/app/{key}/{self.path}"
        self.query = query
        self.headers = {"Content-Type": "application/json"}
        if origin is not None:
            self.headers["Origin"] = origin
        self.socket_id = ""

    def url(self, kind: str, number: int = 1) -> str:
        """The URL of a ``kind`` request numbered ``number`` (pusher-js's ``n``: one counter
        per page; these sessions send 1 unless told, a number the server orders nothing by)."""
        stamp = int(time.time() * 1000)
        if kind == "xhr_send":  # pusher-js sends without the protocol parameters
            return f"{self.base}/xhr_send?t={stamp}&n={number}"
        return f"{self.base}/{kind}?{self.query}&t={stamp}&n={number}"

    async def poll(self, timeout: float = TIMEOUT) -> Reply:
        async with asyncio.timeout(timeout):
            async with self.http.post(self.url("xhr"), data=b"", headers=self.headers) as resp:
                return Reply(resp.status, dict(resp.headers), await resp.read())

    async def poll_frames(self, timeout: float = TIMEOUT) -> list[Frame]:
        reply = await self.poll(timeout)
        assert reply.status == 200, (reply.status, reply.body)
        return parse_body(reply.body)

    async def poll_messages(
        self, ignore: frozenset[str] = frozenset({SUBSCRIPTION_COUNT})
    ) -> list[dict[str, Any]]:
        """One poll that must answer a single ``a`` frame; its messages minus ``ignore``."""
        frames = await self.poll_frames()
        assert len(frames) == 1 and frames[0][0] == "a", frames
        return [m for m in frames[0][1] if m.get("event") not in ignore]

    async def open_polling(self) -> str:
        """First poll (``o`` only), second poll (connection_established); the socket id."""
        assert await self.poll_frames() == [("o", None)]
        [established] = await self.poll_messages()
        self.socket_id = established_socket_id(established)
        return self.socket_id

    @asynccontextmanager
    async def stream(self, number: int = 1) -> AsyncIterator[Stream]:
        async with self.http.post(
            self.url("xhr_streaming", number), data=b"", headers=self.headers
        ) as resp:
            assert resp.status == 200, resp.status
            yield Stream(resp)

    async def open_stream(self, stream: Stream) -> str:
        """Prelude, ``o``, then connection_established; the socket id."""
        assert await stream.line() == PRELUDE
        assert await stream.frame() == ("o", None)
        [established] = await stream.messages()
        self.socket_id = established_socket_id(established)
        return self.socket_id

    async def send_raw(self, body: bytes, number: int = 1) -> Reply:
        url = self.url("xhr_send", number)
        async with asyncio.timeout(TIMEOUT):
            async with self.http.post(url, data=body, headers=self.headers) as r:
                return Reply(r.status, dict(r.headers), await r.read())

    async def send(self, *messages: dict[str, Any], number: int = 1) -> None:
        body = send_body(*messages)
        reply = await self.send_raw(body, number)
        assert reply.status == 204, (reply.status, reply.body)

    async def subscribe(self, channel: str, auth: str | None = None) -> None:
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        await self.send({"event": "pusher:subscribe", "data": data})


def send_body(*messages: dict[str, Any]) -> bytes:
    """An ``xhr_send`` body: a JSON array of the messages as JSON strings."""
    return json.dumps([json.dumps(m) for m in messages]).encode()


def assert_json_error(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body)
    payload = reply.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    assert payload["error"]
