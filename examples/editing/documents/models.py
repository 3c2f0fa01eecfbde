"""A document, and who may see it: the one rule both the page and the channel auth ask."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class DocumentQuerySet(models.QuerySet["Document"]):
    def visible_to(self, user: Any) -> DocumentQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(readers=None) | Q(readers=user)).distinct()


class Document(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    # Nobody listed: every signed-in user may open it. Anyone listed: only they may.
    readers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="readable_documents"
    )
    saved_at = models.DateTimeField(null=True, blank=True)
    saved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = DocumentQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.title

    @property
    def channel(self) -> str:
        """Its presence channel: whoever is subscribed is on the page now."""
        return f"presence-document-{self.pk}"

    def can_view(self, user: Any) -> bool:
        return Document.objects.visible_to(user).filter(pk=self.pk).exists()
