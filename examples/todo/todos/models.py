"""A todo list with its members, and its items: the rows that go live.

``Todo.version`` is the counter the live layer needs on every row: it adds one on each
save (unless the view already changed it), every event carries it, and the page drops
any event whose version it has already seen.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

TITLE_MAX = 200  # short enough that no event comes near the 8 KB payload limit


class TodoListQuerySet(models.QuerySet["TodoList"]):
    def of(self, user: Any) -> TodoListQuerySet:
        """The lists ``user`` is a member of (none for an anonymous user)."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self.filter(members=user)


class TodoList(models.Model):
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="todo_lists")

    objects = TodoListQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def channel(self) -> str:
        """Its live channel (the ``list_id`` filter of ``TodoLive`` in realtime.py)."""
        return f"private-live.todo.list_id.{self.pk}"


class Todo(models.Model):
    title = models.CharField(max_length=TITLE_MAX)
    done = models.BooleanField(default=False)
    list = models.ForeignKey(TodoList, on_delete=models.CASCADE, related_name="items")
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.title

    def as_row(self) -> dict[str, Any]:
        """The row as the live events carry it (the fields declared in realtime.py)."""
        return {
            "id": self.pk,
            "title": self.title,
            "done": self.done,
            "list_id": self.list_id,
            "version": self.version,
        }
