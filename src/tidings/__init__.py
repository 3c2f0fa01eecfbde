"""Tidings: real-time web for Python, speaking the Pusher Channels protocol."""

__version__ = "0.1.0"

# After __version__: the server modules these import read it.
from tidings.backends import Backend, Event, PublishError  # noqa: E402
from tidings.realtime import Realtime  # noqa: E402

__all__ = ["Backend", "Event", "PublishError", "Realtime", "__version__"]
