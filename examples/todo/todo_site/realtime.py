"""The Realtime of this site, and the live model: every list's items, on the list's channel.

Tidings runs inside this process (``rt.asgi(django_app)`` in asgi.py), with the in-memory
broker. ``@rt.live`` is all it takes to make ``Todo`` live: each save, on commit, becomes a
``created``, ``updated`` or ``deleted`` event on ``private-live.todo.list_id.<list>``, and
a page that subscribes gets the list's rows first (``tidings:snapshot``), with no gap
between them and the events.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.db.models import QuerySet
from tidings import Realtime

from todos.models import Todo, TodoList

rt = Realtime(
    app_id="1002",  # digits only: the Pusher server SDKs accept no other app id
    key="todo-key",
    # Demo only: the secret signs every channel auth; a real site reads it from its vault.
    secret=os.environ.get("TODO_APP_SECRET", "demo-only-todo-secret"),
    # No load balancer to take this process out of rotation before it stops: Ctrl-C need
    # not wait the default 2 s before telling the pages to reconnect.
    shutdown_ready_delay=0.2,
)

LIST_ID = re.compile(r"\A[0-9]{1,18}\Z")  # a positive 64-bit integer, as SQLite stores it


@rt.live(Todo, fields=["id", "title", "done", "list_id", "version"], filters=["list_id"])
class TodoLive:
    """The items of one list are one partition: ``list_id`` names the channel."""

    def authorize(self, user: Any, list_id: str) -> bool:
        """Members only. Asked at /pusher/auth (a Django view, in a worker thread), the one
        check that guards the items: the page holds none, they all come over the channel."""
        if not LIST_ID.match(list_id):
            return False  # the placeholder takes any channel-name text
        return TodoList.objects.of(user).filter(pk=list_id).exists()

    def snapshot(self, list_id: str) -> QuerySet[Todo]:
        """The list's items as they are when the page subscribes, oldest first (the page
        shows them in this order, then new ones as they come)."""
        return Todo.objects.filter(list_id=list_id).order_by("pk")
