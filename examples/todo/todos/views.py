"""The pages (your lists, one list) and the writes: plain Django POST views.

The writes know nothing of Tidings. Each saves or deletes a ``Todo`` in a transaction;
``@rt.live`` (todo_site/realtime.py) turns the commit into the live event, and the
X-Socket-ID header the page sends (read by ``LiveMiddleware``) keeps that event from the
tab that wrote. That tab updates itself from the answer instead: each write answers
``{"event": ..., "row": ...}``, the event its list's channel got, in the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from todo_site.realtime import LIST_ID, rt

from .models import TITLE_MAX, Todo, TodoList

PUSHER_JS = Path(__file__).resolve().parents[2] / "node_modules/pusher-js/dist/web/pusher.min.js"
TODO_JS = Path(__file__).resolve().parent / "static/todo.js"

Write = Callable[[HttpRequest, int], HttpResponse]


class Refused(Exception):
    """A write that is not done: the status and the message the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def write(view: Callable[[HttpRequest, int], dict[str, Any]]) -> Write:
    """A POST-only write called by the page's script: JSON in every case (an error, not
    the login page's redirect), the whole view in one transaction."""

    @require_POST
    def answer(request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "not signed in"}, status=403)
        try:
            with transaction.atomic():
                return JsonResponse(view(request, pk))
        except Refused as refused:
            return JsonResponse({"error": refused.message}, status=refused.status)

    return answer


def member_list(request: HttpRequest, pk: int | str) -> TodoList:
    found = TodoList.objects.of(request.user).filter(pk=pk).first()
    if found is None:
        raise Refused(403, f"you are not a member of list {pk}")
    return found


def item_for_update(request: HttpRequest, pk: int) -> Todo:
    """The item, locked for this transaction, if it is on one of the user's lists."""
    item = Todo.objects.select_for_update().filter(pk=pk).first()
    if item is None:
        raise Refused(404, f"no item {pk} (deleted by someone else?)")
    member_list(request, item.list_id)
    return item


def title_from(request: HttpRequest) -> str:
    title = request.POST.get("title", "").strip()
    if not title:
        raise Refused(400, "the title is empty")
    if len(title) > TITLE_MAX:
        raise Refused(400, f"the title is longer than {TITLE_MAX} characters")
    return title


# -- pages -------------------------------------------------------------------------------


@login_required
def list_index(request: HttpRequest) -> HttpResponse:
    lists = TodoList.objects.of(request.user).prefetch_related("members")
    return render(request, "todos/index.html", {"lists": lists})


@login_required
def list_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One list's page. Its items are not in the HTML: the page's script gets them from the
    channel (the snapshot, then the events), so the channel's authorize is the check that
    guards them. A non-member gets the same page without the list's name, and the page
    shows the channel's refusal."""
    todo_list = TodoList.objects.of(request.user).filter(pk=pk).first()
    lists = TodoList.objects.of(request.user)
    page = {
        "key": rt.app.key,
        "listId": pk,
        "channel": f"private-live.todo.list_id.{pk}",
        "lists": [{"id": other.pk, "name": other.name} for other in lists],
        "createUrl": f"/lists/{pk}/items",
    }
    return render(request, "todos/list.html", {"todo_list": todo_list, "pk": pk, "page": page})


# -- writes ------------------------------------------------------------------------------


@write
def create(request: HttpRequest, pk: int) -> dict[str, Any]:
    item = Todo.objects.create(list=member_list(request, pk), title=title_from(request))
    return {"event": "created", "row": item.as_row()}


@write
def set_done(request: HttpRequest, pk: int) -> dict[str, Any]:
    # The new state, not "toggle": two people ticking the same box agree on the result.
    done = request.POST.get("done")
    if done not in ("true", "false"):
        raise Refused(400, "done must be true or false")
    item = item_for_update(request, pk)
    item.done = done == "true"
    item.save()
    return {"event": "updated", "row": item.as_row()}


@write
def rename(request: HttpRequest, pk: int) -> dict[str, Any]:
    item = item_for_update(request, pk)
    item.title = title_from(request)
    item.save()
    return {"event": "updated", "row": item.as_row()}


@write
def move(request: HttpRequest, pk: int) -> dict[str, Any]:
    """To another of the user's lists: the old list's channel gets ``deleted`` and the new
    one's ``created``. The page is on the old list: it gets the ``deleted``."""
    item = item_for_update(request, pk)
    target = request.POST.get("list", "")
    if not LIST_ID.match(target):
        raise Refused(400, "no list to move the item to")
    to = member_list(request, target)
    if to.pk == item.list_id:
        raise Refused(400, "the item is on that list already")
    item.list = to
    item.save()
    return {"event": "deleted", "row": {"id": item.pk, "version": item.version}, "to": to.pk}


@write
def delete(request: HttpRequest, pk: int) -> dict[str, Any]:
    item = item_for_update(request, pk)
    gone = {"id": item.pk, "version": item.version + 1}  # what `deleted` carries
    item.delete()
    return {"event": "deleted", "row": gone}


# -- scripts -----------------------------------------------------------------------------


def pusher_js(request: HttpRequest) -> HttpResponse:
    """pusher-js from examples/node_modules: the page loads nothing from a CDN."""
    if not PUSHER_JS.is_file():
        raise Http404("pusher-js is not installed: run `make example NAME=todo`")
    return _script(PUSHER_JS)


def todo_js(request: HttpRequest) -> HttpResponse:
    """The list page's script (a demo needs no static files pipeline)."""
    return _script(TODO_JS)


def _script(path: Path) -> HttpResponse:
    # Read whole rather than streamed: Django's ASGI handler warns about a FileResponse's
    # synchronous iterator, and these files are small.
    return HttpResponse(path.read_bytes(), content_type="text/javascript; charset=utf-8")
