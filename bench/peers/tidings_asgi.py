"""Tidings under uvicorn: the ASGI app of the embedded API, ``rt.asgi(...)``.

The settings are the standalone server's, from the same TOML file (bench/servers.py writes it
and passes it as ``TIDINGS_CONFIG``, which ``Realtime.from_env()`` reads as ``tidings serve``
does): the bench app (id 12345, key app-key, secret app-secret) with no limit that would
throttle the bench. So Tidings and Tidings-ASGI differ only in what serves the sockets.
Publishes are the same signed Pusher REST requests, served by the ASGI app's HTTP edge. The
wrapped app is the few lines of bench/peers/plain_asgi.py: lifespan and the harness's
``GET /ready`` (not a Pusher path, so Tidings forwards it, as it would to a user's app).

    TIDINGS_CONFIG=tidings.toml .venv/bin/python -m uvicorn --app-dir bench/peers \\
        tidings_asgi:app --loop uvloop --ws-per-message-deflate false --port 6001
"""

from __future__ import annotations

from plain_asgi import ready

from tidings import Realtime

rt = Realtime.from_env()
app = rt.asgi(ready)
