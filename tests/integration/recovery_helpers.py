"""Raw clients for the Tidings recovery extension (docs/recovery.md), and a steady publisher.

:class:`Follower` does what the JS plugin does, by hand: it subscribes with the opt-in,
remembers the epoch from ``subscription_succeeded`` and the offset of every event, and
after a lost connection subscribes again on a new socket asking to recover from there.
Frames are read raw, so tests see exactly what the server sent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pusher_helpers import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    channel_auth,
    rest_request,
)
from websockets.exceptions import ConnectionClosed

SUCCEEDED = "pusher_internal:subscription_succeeded"
UNRECOVERED = "tidings:unrecovered"
SKIPPED = ("pusher_internal:subscription_count",)


def trigger(
    http_url: str, channel: str, event: str, data: str, socket_id: str | None = None
) -> None:
    body: dict[str, Any] = {"name": event, "channel": channel, "data": data}
    if socket_id is not None:
        body["socket_id"] = socket_id
    resp = rest_request(http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 200, (resp.status, resp.body)


def batch(http_url: str, channel: str, datas: list[str]) -> None:
    events = [{"name": "tick", "channel": channel, "data": d} for d in datas]
    resp = rest_request(
        http_url, "POST", f"/apps/{APP_ID}/batch_events", json_body={"batch": events}
    )
    assert resp.status == 200, (resp.status, resp.body)


@dataclass
class Publisher:
    """Publishes ``tick`` events to ``channel`` at about ``rate`` per second, in batches of
    ``per_request``, from ``lanes`` concurrent REST clients, until stopped. With one lane
    the data of the events are 1, 2, 3... in publication order."""

    http_url: str
    channel: str
    rate: float
    per_request: int = 1
    lanes: int = 1
    sent: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run()) for _ in range(self.lanes)]

    async def _run(self) -> None:
        interval = self.per_request * self.lanes / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        send = batch if self.per_request > 1 else _one
        while not self._stopping:
            datas = [str(self.sent + i + 1) for i in range(self.per_request)]
            self.sent += len(datas)  # counted first: another lane numbers its own next
            await asyncio.to_thread(send, self.http_url, self.channel, datas)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def stop(self) -> int:
        """Stop after the requests in flight (so ``sent`` is exactly what was published)."""
        self._stopping = True
        await asyncio.gather(*self._tasks)
        return self.sent


def _one(http_url: str, channel: str, datas: list[str]) -> None:
    trigger(http_url, channel, "tick", datas[0])


@dataclass
class Follower:
    """One channel followed across reconnects, recording every offset received."""

    open_socket: SocketOpener
    ws_url: str
    channel: str
    sock: PusherSocket | None = None
    epoch: str | None = None
    offset: int | None = None
    socket_id: str | None = None
    offsets: list[int] = field(default_factory=list)  # every event's offset, as received
    datas: list[str] = field(default_factory=list)
    succeeded: list[dict[str, Any]] = field(default_factory=list)  # their decoded data
    unrecovered: list[dict[str, Any]] = field(default_factory=list)

    async def subscribe(self, recover: bool = False) -> dict[str, Any]:
        """Connect a new socket and subscribe (recovering from the last position if asked);
        returns the decoded subscription_succeeded data."""
        self.sock = await self.open_socket(self.ws_url)
        tidings: dict[str, Any] = {"v": 1}
        if recover:
            assert self.epoch is not None and self.offset is not None
            tidings["recover"] = {
                "epoch": self.epoch,
                "offset": self.offset,
                "socket_id": self.socket_id,
            }
        data: dict[str, Any] = {"channel": self.channel, "tidings": tidings}
        if self.channel.startswith("private-"):
            data["auth"] = channel_auth(self.sock.socket_id, self.channel)
        await self.sock.send_event("pusher:subscribe", data)
        while True:
            message = await self.next()
            if message["event"] == SUCCEEDED:
                break
        self.socket_id = self.sock.socket_id
        return self.succeeded[-1]

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Read one frame and record it, as the plugin does."""
        assert self.sock is not None
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.sock.ws.recv()
                assert isinstance(frame, str)
                message = json.loads(frame)
                if message.get("event") not in SKIPPED:
                    break
        event = message.get("event")
        if event == SUCCEEDED:
            data = json.loads(message["data"])
            self.succeeded.append(data)
            self.epoch, self.offset = data["tidings"]["epoch"], data["tidings"]["offset"]
        elif event == UNRECOVERED:
            data = json.loads(message["data"])
            self.unrecovered.append(data)
            self.epoch, self.offset = data["epoch"], data["offset"]
        elif "tidings" in message:
            self.offset = message["tidings"]["offset"]
            self.offsets.append(self.offset)
            self.datas.append(message["data"])
        return message

    async def read_until_offset(self, offset: int, timeout: float = 4 * TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while self.offset is None or self.offset < offset:
                await self.next(timeout)

    async def read_for(self, seconds: float) -> None:
        """Record whatever arrives for ``seconds`` (the connection may die meanwhile)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    await self.next(seconds + 1)
        except (TimeoutError, ConnectionClosed, AssertionError):
            pass

    def kill_tcp(self) -> None:
        """Drop the TCP connection without a close handshake, as a network loss would."""
        assert self.sock is not None
        self.sock.ws.transport.abort()


def assert_exactly_once_in_order(offsets: list[int], first: int, last: int) -> None:
    assert offsets == list(range(first, last + 1)), _describe(offsets, first, last)


def _describe(offsets: list[int], first: int, last: int) -> str:
    seen = set(offsets)
    missing = [o for o in range(first, last + 1) if o not in seen]
    dupes = sorted({o for o in offsets if offsets.count(o) > 1})
    return f"missing {missing[:20]} duplicated {dupes[:20]} ({len(offsets)} received)"
