"""The ASGI app uvicorn serves: Tidings in front of Django.

``rt.asgi()`` takes the Pusher paths (the WebSocket at ``/app/{key}``, the HTTP fallback
under ``/pusher/app/...``, the REST API under ``/apps/``) and ``/tidings.js`` (the
``liveCollection`` helper the list page uses), and hands every other request to Django,
``/pusher/auth`` included.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "todo_site.settings")
django_app = get_asgi_application()

from todo_site.realtime import rt  # noqa: E402  (models need Django set up first)

application = rt.asgi(django_app)
