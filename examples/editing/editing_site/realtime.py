"""The Realtime of this site, and who may join a document's presence channel.

Tidings runs inside this process (``rt.asgi(django_app)`` in asgi.py): one uvicorn process
serves the pages, the auth endpoints and the sockets, with the in-memory broker. Several
processes would need ``broker="redis://…"``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tidings import Realtime

from documents.models import Document

rt = Realtime(
    app_id="1001",  # digits only: the Pusher server SDKs accept no other app id
    key="editing-key",
    # Demo only: the secret signs every channel auth; a real site reads it from its vault.
    secret=os.environ.get("EDITING_APP_SECRET", "demo-only-editing-secret"),
    # No load balancer to take this process out of rotation before it stops: Ctrl-C need
    # not wait the default 2 s before telling the pages to reconnect.
    shutdown_ready_delay=0.2,
)

DOC_ID = re.compile(r"\A[0-9]{1,18}\Z")  # a positive 64-bit integer, as SQLite stores it
# A palette rather than random colours: a user keeps one colour in every tab and on every page.
AVATAR_COLOURS = ("#c92a2a", "#2b8a3e", "#1864ab", "#862e9c", "#d9480f", "#087f5b", "#5f3dc4")


def display_name(user: Any) -> str:
    return str(user.get_full_name() or user.username)


def avatar_colour(user: Any) -> str:
    return AVATAR_COLOURS[user.pk % len(AVATAR_COLOURS)]


@rt.presence("presence-document-{doc_id}")
def editor(user: Any, doc_id: str) -> dict[str, Any] | None:
    """Who joins a document's channel: a signed-in user who may see the document.

    The page itself checks the same rule, but anyone can POST any channel name to
    /pusher/auth: the check that counts is this one. The member's ``user_id`` is the
    Django user's pk, so presence shows a user once however many tabs they have open.
    Runs in Django's sync view, in a worker thread: the ORM is fine here.
    """
    # The placeholder takes any characters but dots: only a plausible pk reaches the database.
    found = Document.objects.filter(pk=doc_id) if DOC_ID.match(doc_id) else Document.objects.none()
    document = found.first()
    if document is None or not document.can_view(user):
        return None  # 403 to pusher-js: a pusher:subscription_error on the page
    return {
        "user_id": user.pk,
        "user_info": {"name": display_name(user), "colour": avatar_colour(user)},
    }
