"""Tidings as an ASGI app: Pusher sockets (and, through the HTTP edge, the REST API and the
HTTP fallbacks) served by uvicorn, hypercorn or Django, in front of the developer's own app.

Build the node with :func:`write_to_asgi` as its writer; :class:`TidingsASGI` does the rest
(``rt.asgi(other)`` returns one).
"""

from tidings.asgi.app import MultipleWorkersError, Runtime, TidingsASGI
from tidings.asgi.websocket import AsgiConnection, write_to_asgi

__all__ = ["AsgiConnection", "MultipleWorkersError", "Runtime", "TidingsASGI", "write_to_asgi"]
