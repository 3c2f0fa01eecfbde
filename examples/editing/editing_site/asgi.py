"""The ASGI app uvicorn serves: Tidings in front of Django.

``rt.asgi()`` takes the Pusher paths (the WebSocket at ``/app/{key}``, the HTTP fallback
under ``/pusher/app/...``, the REST API under ``/apps/``) and hands every other request to
Django, ``/pusher/auth`` included. Django's handler does no ASGI lifespan; Tidings answers
it itself and starts with the server.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "editing_site.settings")
django_app = get_asgi_application()

from editing_site.realtime import rt  # noqa: E402  (models need Django set up first)

application = rt.asgi(django_app)
