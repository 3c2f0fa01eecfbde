"""Tidings: real-time web for Python, speaking the Pusher Channels protocol."""

__version__ = "0.1.0"
