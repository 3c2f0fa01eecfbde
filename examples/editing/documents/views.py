"""The pages: the documents you may open, one document with who else is on it, and saving."""

from __future__ import annotations

import re
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from editing_site.realtime import avatar_colour, display_name, rt

from .models import Document

PUSHER_JS = Path(__file__).resolve().parents[2] / "node_modules/pusher-js/dist/web/pusher.min.js"
EDITORS_JS = Path(__file__).resolve().parent / "static/editors.js"
SOCKET_ID = re.compile(r"\A[0-9]+\.[0-9]+\Z")
# Pusher's limit is 10 KB per event: a longer body is left out, and the others reload it.
MAX_BODY_IN_EVENT = 8000


@login_required
def document_list(request: HttpRequest) -> HttpResponse:
    # Who is on each document right now, asked of Tidings once per page load (the
    # document page is the live view). A sync call from a sync view: it waits for the
    # answer from Tidings' event loop.
    here = rt.channels(prefix="presence-document-", info=["user_count"])
    rows = [
        {"document": document, "here": here.get(document.channel, {}).get("user_count", 0)}
        for document in Document.objects.visible_to(request.user)
    ]
    return render(request, "documents/list.html", {"rows": rows})


@login_required
def document_detail(request: HttpRequest, pk: int) -> HttpResponse:
    document = get_object_or_404(Document, pk=pk)
    if not document.can_view(request.user):
        return render(request, "documents/forbidden.html", {"document": document}, status=403)
    me = {
        "id": str(request.user.pk),
        "name": display_name(request.user),
        "colour": avatar_colour(request.user),
    }
    page = {
        "key": rt.app.key,
        "channel": document.channel,
        "me": me,
        "saveUrl": f"/docs/{document.pk}/save",
        "savedAt": document.saved_at.isoformat() if document.saved_at else None,
        "savedBy": display_name(document.saved_by) if document.saved_by else None,
    }
    return render(request, "documents/detail.html", {"document": document, "page": page})


@require_POST
def save(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the body and tell the others on the page, once the row is committed.

    ``on_commit=True``: the event leaves only if the transaction commits, so nobody is
    told of a save that rolled back. ``socket_id`` leaves out the tab that saved (it
    updates itself); the user's other tabs still hear of it."""
    # Called by the page's script: JSON errors rather than the login page's redirect.
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not signed in"}, status=403)
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(pk=pk).first()
        if document is None:
            return JsonResponse({"error": f"no document {pk}"}, status=404)
        if not document.can_view(request.user):
            return JsonResponse({"error": "you may not edit this document"}, status=403)
        body = request.POST.get("body")
        if body is None:
            return JsonResponse({"error": "no body in the form"}, status=400)
        document.body = body
        document.saved_at = timezone.now()
        document.saved_by = request.user
        document.save()
        news = {
            "userId": str(request.user.pk),
            "by": display_name(request.user),
            "at": document.saved_at.isoformat(),
        }
        if len(body.encode()) <= MAX_BODY_IN_EVENT:
            news["body"] = body
        socket_id = request.POST.get("socket_id", "")
        rt.trigger(
            document.channel,
            "saved",
            news,
            socket_id if SOCKET_ID.match(socket_id) else None,
            on_commit=True,
        )
    return JsonResponse(news)


def pusher_js(request: HttpRequest) -> HttpResponse:
    """pusher-js from examples/node_modules: the page loads nothing from a CDN."""
    if not PUSHER_JS.is_file():
        raise Http404("pusher-js is not installed: run `make example NAME=editing`")
    return _script(PUSHER_JS)


def editors_js(request: HttpRequest) -> HttpResponse:
    """The document page's script (a demo needs no static files pipeline)."""
    return _script(EDITORS_JS)


def _script(path: Path) -> HttpResponse:
    # Read whole rather than streamed: Django's ASGI handler warns about a FileResponse's
    # synchronous iterator, and these files are small.
    return HttpResponse(path.read_bytes(), content_type="text/javascript; charset=utf-8")
