"""A node served in the test's own event loop, with hooks wired as an embedded app has them.

``embedded(app, hooks)`` starts a Node (memory broker) with its WebSocket endpoint on a free
port of 127.0.0.1 and the hooks attached by ``EmbeddedHooks`` (tee'd with an HTTP
``WebhookSender`` when ``sender`` is given); everything is stopped on exit, in a lifecycle's
order: drain the sockets, close the hooks, then the sender and the node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry
from tidings.hooks import EmbeddedHooks, Hooks
from tidings.node import Node
from tidings.protocol.errors import ErrorCode
from tidings.server.webhooks import WebhookSender
from tidings.server.websocket import WebSocketEndpoint


@dataclass
class Embedded:
    node: Node
    ws_url: str  # ws://127.0.0.1:port, as the PusherSocket opener takes it


@asynccontextmanager
async def embedded(
    app: App, hooks: Hooks, *, vacated_delay: float = 0.3, sender: WebhookSender | None = None
) -> AsyncIterator[Embedded]:
    node = Node(AppRegistry.of([app]), MemoryBroker())
    if sender is not None:
        node.webhooks = sender
        await sender.start()
    await node.start()
    attached = EmbeddedHooks(node, hooks, app.id, vacated_delay)
    await attached.start()
    endpoint = WebSocketEndpoint(node, 1 << 20)
    application = web.Application()
    application.add_routes([web.get("/app/{key}", endpoint.handle)])
    runner = web.AppRunner(application, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Embedded(node, f"ws://127.0.0.1:{port}")
    finally:
        await node.drain(ErrorCode.RECONNECT)
        await endpoint.close()
        await runner.cleanup()
        await attached.close()
        if sender is not None:
            await sender.close()
        await node.close()
