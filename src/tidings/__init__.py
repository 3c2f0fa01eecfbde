"""Tidings: real-time web for Python, speaking the Pusher Channels protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tidings.authorization import sse_token
    from tidings.backends import Backend, Event, PublishError
    from tidings.hooks import ClientEvent
    from tidings.realtime import Realtime

__all__ = [
    "Backend",
    "ClientEvent",
    "Event",
    "PublishError",
    "Realtime",
    "__version__",
    "sse_token",
]

_HOMES = {
    "Backend": "tidings.backends",
    "ClientEvent": "tidings.hooks",
    "Event": "tidings.backends",
    "PublishError": "tidings.backends",
    "Realtime": "tidings.realtime",
    "sse_token": "tidings.authorization",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: ``tidings.__version__`` (read by the server) costs nothing."""
    if name not in _HOMES:
        raise AttributeError(f"module 'tidings' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
