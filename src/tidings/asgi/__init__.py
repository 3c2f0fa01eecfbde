"""Tidings as an ASGI app: Pusher sockets (and, through the HTTP edge, the REST API and the
HTTP fallbacks) served by uvicorn, hypercorn or Django, in front of the developer's own app.

``rt.asgi(other)`` returns a :class:`TidingsASGI`.
"""

from tidings.asgi.app import MultipleWorkersError, Runtime, TidingsASGI
from tidings.asgi.websocket import AsgiConnection

__all__ = ["AsgiConnection", "MultipleWorkersError", "Runtime", "TidingsASGI"]
