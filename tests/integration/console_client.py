"""A client of the debug console's JSON API and event stream (docs/console.md), for the
console's integration and cluster tests: an aiohttp session with its own cookie jar.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))

Record = dict[str, Any]


class ConsoleClient:
    """One browser's worth of console: a cookie jar, the CSRF token, open streams."""

    def __init__(
        self, http_url: str, local_address: str | None = None, ssl: bool | None = None
    ) -> None:
        self.http_url = http_url
        connector = aiohttp.TCPConnector(
            local_addr=(local_address, 0) if local_address else None,
            ssl=False if ssl is False else True,
        )
        # unsafe: keep cookies of an IP-address host (127.0.0.1), as a browser does.
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        self.csrf = ""
        self.streams: list[EventStream] = []

    async def close(self) -> None:
        for stream in self.streams:
            stream.close()
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """(status, JSON body or None, response)."""
        sent = dict(headers or {})
        if csrf and self.csrf and method == "POST":
            sent.setdefault("X-CSRF-Token", self.csrf)
        async with self.session.request(
            method,
            self.http_url + path,
            json=body if data is None and body is not None else None,
            data=data,
            headers=sent,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as response:
            raw = await response.read()
            parsed = (
                json.loads(raw) if raw and response.content_type == "application/json" else None
            )
            return response.status, parsed, response

    async def login(self, **credentials: str) -> Any:
        status, body, _ = await self.request("POST", "/console/api/login", credentials)
        assert status == 200, (status, body)
        self.csrf = body["csrf"]
        return body

    async def stream(self, app_id: str, **filters: str) -> EventStream:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        path = f"/console/api/apps/{app_id}/stream" + (f"?{query}" if query else "")
        response = await self.session.get(
            self.http_url + path, timeout=aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT)
        )
        assert response.status == 200, (response.status, await response.text())
        stream = EventStream(response)
        self.streams.append(stream)
        await stream.started()
        return stream


class EventStream:
    """The records of one ``/stream``, read in the background as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.records: list[Record] = []
        self.lines: list[str] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith("data: "):
                    self.records.append(json.loads(line[len("data: ") :]))
                self._arrived.set()
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self._arrived.set()

    async def started(self) -> None:
        await self.wait(lambda: "retry: 2000" in self.lines, "the retry line")

    async def wait(
        self, condition: Callable[[], bool], what: str, timeout: float = TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self._reader.done():
                shown = [r for r in self.records if r["type"] != "stats"][-20:]
                raise AssertionError(f"no {what} on the stream; last records: {shown}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    async def expect(self, what: str = "record", timeout: float = TIMEOUT, **fields: Any) -> Record:
        """The first record (from the start of the stream) with all ``fields``."""

        def found() -> Record | None:
            for record in self.records:
                if all(record.get(k) == v for k, v in fields.items()):
                    return record
            return None

        await self.wait(lambda: found() is not None, f"{what} {fields}", timeout)
        record = found()
        assert record is not None
        return record

    def of_type(self, kind: str) -> list[Record]:
        return [r for r in self.records if r["type"] == kind]

    def close(self) -> None:
        self._reader.cancel()
        self.response.close()
