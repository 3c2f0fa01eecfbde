"""One HTTP-fallback client's messages are handled in the order they arrived, as a
WebSocket's frames are, even when a ``before`` hook awaits between two of them.

pusher-js posts every message in an ``xhr_send`` of its own without waiting for the
previous answer, so two sends of one session are in flight at once.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from embedded_node import embedded_realtime, serving
from fallback_helpers import FallbackSession
from pusher_helpers import TIMEOUT, SocketOpener, channel_auth, unique

from tidings import ClientEvent


async def test_a_hooked_client_event_is_not_overtaken_by_the_next_send(
    open_socket: SocketOpener,
) -> None:
    rt = embedded_realtime()
    hooked = asyncio.Event()
    release = asyncio.Event()

    @rt.before("client-slow")
    async def slow(event: ClientEvent) -> str:
        hooked.set()
        await release.wait()  # held until the second send has reached the server
        return event.data

    async with serving(rt) as ws_url, aiohttp.ClientSession() as http:
        channel = "private-" + unique("order")
        listener = await open_socket(ws_url)
        await listener.subscribe_private(channel)
        sender = FallbackSession(http, ws_url.replace("ws://", "http://"))
        async with sender.stream() as stream:
            await sender.open_stream(stream)
            await sender.subscribe(channel, channel_auth(sender.socket_id, channel))
            [succeeded] = await stream.messages()
            assert succeeded["event"] == "pusher_internal:subscription_succeeded"
            first = asyncio.create_task(
                sender.send({"event": "client-slow", "channel": channel, "data": {"n": 1}})
            )
            async with asyncio.timeout(TIMEOUT):
                await hooked.wait()
            second = asyncio.create_task(
                sender.send({"event": "client-fast", "channel": channel, "data": {"n": 2}})
            )
            # Time for the second send to reach the server while the first waits on its hook:
            # taken at once, it would be published first (what this test catches).
            await asyncio.sleep(0.3)
            release.set()
            await asyncio.gather(first, second)
            received = [await listener.recv(), await listener.recv()]
    assert [(m["event"], json.loads(m["data"])) for m in received] == [
        ("client-slow", {"n": 1}),
        ("client-fast", {"n": 2}),
    ]
