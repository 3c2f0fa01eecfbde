"""A node served in the test's own event loop, with hooks wired as an embedded app has them.

``embedded(app, hooks)`` starts a Node (memory broker) with its WebSocket endpoint on a free
port of 127.0.0.1, the hooks' sink (tee'd with an HTTP ``WebhookSender`` when ``sender`` is
given) and their ``before`` filter; everything is stopped on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from tidings.brokers.memory import MemoryBroker
from tidings.core.apps import App, AppRegistry
from tidings.hooks import Hooks, HookSink, WebhookTee
from tidings.node import Node
from tidings.protocol.errors import ErrorCode
from tidings.server.webhooks import WebhookSender
from tidings.server.websocket import WebSocketEndpoint


@dataclass
class Embedded:
    node: Node
    sink: HookSink
    ws_url: str  # ws://127.0.0.1:port, as the PusherSocket opener takes it


@asynccontextmanager
async def embedded(
    app: App, hooks: Hooks, *, vacated_delay: float = 0.3, sender: WebhookSender | None = None
) -> AsyncIterator[Embedded]:
    node = Node(AppRegistry.of([app]), MemoryBroker())
    sink = HookSink(hooks, app.id, vacated_delay)
    node.webhooks = WebhookTee(sender, sink) if sender is not None else sink
    node.client_event_filter = sink.filter_client_event
    if sender is not None:
        await sender.start()
    await node.start()
    await hooks.start()
    endpoint = WebSocketEndpoint(node, 1 << 20)
    application = web.Application()
    application.add_routes([web.get("/app/{key}", endpoint.handle)])
    runner = web.AppRunner(application, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Embedded(node, sink, f"ws://127.0.0.1:{port}")
    finally:
        await node.drain(ErrorCode.RECONNECT)
        await endpoint.close()
        await runner.cleanup()
        sink.release()
        await hooks.close()
        if sender is not None:
            await sender.close()
        await node.close()
