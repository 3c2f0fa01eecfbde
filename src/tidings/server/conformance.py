"""``/conformance/echo``: a WebSocket echo for the Autobahn Testsuite, never in normal runs.

Autobahn's fuzzing client needs a server that echoes every message back; the Pusher
endpoint ``/app/{key}`` cannot be tested directly (its messages are Pusher JSON, it answers
binary frames with an error). This endpoint runs on the same stack instead: aiohttp's frame
reader with the options of ``/app/{key}`` (compression off, autoping, the same close
handshake timeout), text echoed through :func:`tidings.protocol.frames.text_frame` written
straight to the transport as the fan-out does, binary through aiohttp's writer. Only the
message size limit is larger, for Autobahn's 16 MiB cases.

With ``websocket_engine = "tidings"`` the echo runs on our own protocol instead
(:class:`~tidings.server.websocket_protocol.EchoConnection`): the same frame reader, close
handshake and limits as ``/app/{key}``, so Autobahn tests the engine clients get.

It is mounted only by ``tidings serve --conformance`` (``TIDINGS_CONFORMANCE=1``): an echo
on a public port reflects anything to anyone, so that mode logs a loud warning.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from tidings.protocol.frames import text_frame
from tidings.server.websocket import WebSocketEndpoint

log = logging.getLogger("tidings.conformance")

ECHO_PATH = "/conformance/echo"
# Autobahn case 9.1.6 / 9.2.6 send 16 MiB messages; aiohttp refuses a message of exactly
# max_msg_size bytes, hence the + 1.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 1

WARNING = f"""
*****************************************************************************
  CONFORMANCE MODE: {ECHO_PATH} echoes every WebSocket message back to its
  sender (Autobahn Testsuite). Never run a production server this way.
*****************************************************************************"""


class ConformanceEcho:
    """The echo handler; ``endpoint`` supplies the production WebSocket options."""

    def __init__(self, endpoint: WebSocketEndpoint) -> None:
        self.endpoint = endpoint

    def routes(self) -> list[web.RouteDef]:
        return [web.get(ECHO_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The very options /app/{key} uses, so Autobahn exercises what clients get.
        ws = self.endpoint._response(MAX_MESSAGE_BYTES)  # noqa: SLF001
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "WebSocket upgrade expected"}, status=400)
        if self.endpoint.engine == "tidings":
            self._take_over(request)
            return web.Response()  # never sent: the socket is the echo's (take_over)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                # The fan-out's path: one pre-built unmasked frame written to the transport.
                transport.write(text_frame(msg.data.encode()))
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    def _take_over(self, request: web.Request) -> None:
        from tidings.server.websocket_protocol import EchoConnection, take_over

        node = self.endpoint.node
        app = next(iter(node.apps))  # an echo has no app; its counters take one's

        def connect(transport: asyncio.Transport) -> EchoConnection:
            return EchoConnection(
                node,
                node.new_session(app),
                app,
                transport,
                self.endpoint.max_write_buffer,
                self.endpoint._tasks,  # noqa: SLF001 - closing handshakes end with the server's
                node.outgoing,
                node.counters(app),
                MAX_MESSAGE_BYTES - 1,
            )

        take_over(request, connect).flush_head()


def log_warning() -> None:
    log.warning(WARNING)
