"""A few lines of plain ASGI shared by the ASGI peers (no framework between uvicorn and the
server under test): lifespan, ``GET /ready`` for the harness, reading a body, answering JSON.

bench/peers/ is uvicorn's ``--app-dir``, so both venvs import it from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing of its own to start: acknowledge startup and shutdown (the harness runs
    uvicorn with --lifespan on, and the servers under test forward lifespan here)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def ready(scope: Scope, receive: Receive, send: Send) -> None:
    """The wrapped app of a server under test: lifespan, and ``GET /ready`` (200) once
    uvicorn serves, which is what bench/procs.py's wait_ready polls; 404 for the rest."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] != "http":
        return
    elif scope["path"] == "/ready":
        await respond(send, 200, b'{"ready":true}')
    else:
        await respond(send, 404, b'{"error":"not found"}')
