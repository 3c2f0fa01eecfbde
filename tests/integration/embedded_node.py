"""An embedded ``Realtime`` serving real WebSocket clients from the test's own event loop.

``embedded_realtime(**settings)`` is a Realtime for the test app (12345 / app-key /
app-secret, client events and subscription counts on); register hooks on it, then
``async with serving(rt) as ws_url`` starts it with its listener on a free port of
127.0.0.1 and stops it (drain, hooks run dry, node closed) on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tidings import Realtime
from tidings.server.app import listen

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"


DEFAULTS: dict[str, Any] = {
    "port": 0,
    "shutdown_ready_delay": 0,
    "client_events": True,
    "subscription_count": True,
    "webhook_vacated_delay": 0.3,
}


def embedded_realtime(**settings: Any) -> Realtime:
    return Realtime(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, **{**DEFAULTS, **settings})


@asynccontextmanager
async def serving(rt: Realtime) -> AsyncIterator[str]:
    """Start ``rt`` and listen; yields ``ws://127.0.0.1:port`` (what ``open_socket`` takes)."""
    await rt.start()
    try:
        port = (await listen(rt)).port
        yield f"ws://127.0.0.1:{port}"
    finally:
        await rt.stop()
