"""A Django site with a live model, run as a child process by test_live_django.py.

``python live_django_app.py DIR [DATABASE_URL]``: Django configured with SQLite in DIR (or
the PostgreSQL database of DATABASE_URL), the tables created, an embedded Realtime serving
WebSockets on a free port (printed as ``port N``), then a loop: each stdin line is a JSON
string of Python code run in this module's namespace (``rt``, the models, ``client``, a
Django test client going through the middleware and views below); its ``result`` variable
comes back as one JSON line ``{"result": ...}`` (or ``{"error": traceback}``).

Django settings hold for a whole process, and other tests configure Django their own way:
hence a child process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django
from django.conf import settings


def database(directory: Path, url: str | None) -> dict[str, Any]:
    if url is None:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / "db.sqlite3")}
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


settings.configure(
    DEBUG=False,
    SECRET_KEY="tidings-test-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    MIDDLEWARE=["tidings.integrations.django.LiveMiddleware", f"{__name__}.header_login"],
    DATABASES={"default": database(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)},
    USE_TZ=True,
    LOGGING_CONFIG=None,
)
django.setup()

from django.db import connection, models, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

from tidings import Realtime  # noqa: E402
from tidings.integrations import django as tidings_django  # noqa: E402
from tidings.server.app import listen  # noqa: E402

MEMBERS: dict[str, set[str]] = {"ann": {"1", "2"}, "bob": {"2"}}


class TodoList(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        app_label = "live"


class Todo(models.Model):
    title = models.CharField(max_length=2000)
    done = models.BooleanField(default=False)
    list = models.ForeignKey(TodoList, on_delete=models.CASCADE)
    notes = models.TextField(default="")  # not a live field
    version = models.IntegerField(default=0)

    class Meta:
        app_label = "live"


class PlainTodo(models.Model):
    """Todo's twin that is not live: what a save costs without Tidings."""

    title = models.CharField(max_length=2000)
    done = models.BooleanField(default=False)
    list = models.ForeignKey(TodoList, on_delete=models.CASCADE)
    notes = models.TextField(default="")
    version = models.IntegerField(default=0)

    class Meta:
        app_label = "live"


rt = Realtime(app_id="12345", key="app-key", secret="app-secret", port=0, shutdown_ready_delay=0)


@rt.live(
    Todo, fields=["id", "title", "done", "list_id", "version"], filters=["list_id"], max_payload=600
)
class TodoLive:
    def authorize(self, user: Any, list_id: str) -> bool:
        return list_id in MEMBERS.get(str(user), set())

    def snapshot(self, list_id: str) -> Any:
        return Todo.objects.filter(list_id=list_id).order_by("id")


# -- the app's own views: writes go through normal Django views --------------------------------


class HeaderUser:
    def __init__(self, name: str) -> None:
        self.username = name
        self.is_authenticated = True

    def __str__(self) -> str:
        return self.username


def header_login(get_response: Any) -> Any:
    from django.contrib.auth.models import AnonymousUser

    def middleware(request: HttpRequest) -> HttpResponse:
        name = request.headers.get("X-User")
        request.user = HeaderUser(name) if name else AnonymousUser()
        return get_response(request)

    return middleware


@require_POST
def create_todo(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        todo = Todo.objects.create(title=request.POST["title"], list_id=request.POST["list"])
    return JsonResponse({"id": todo.pk, "version": todo.version}, status=201)


@require_POST
def update_todo(request: HttpRequest, pk: int) -> HttpResponse:
    with transaction.atomic():
        todo = Todo.objects.select_for_update().get(pk=pk)
        todo.done = request.POST.get("done") == "true"
        todo.save()
    return JsonResponse({"id": todo.pk, "version": todo.version})


@require_POST
def delete_todo(request: HttpRequest, pk: int) -> HttpResponse:
    Todo.objects.filter(pk=pk).delete()
    return HttpResponse(status=204)


urlpatterns = [
    *tidings_django.urls(rt),
    path("todos", create_todo),
    path("todos/<int:pk>", update_todo),
    path("todos/<int:pk>/delete", delete_todo),
]

client = Client()
capture = CaptureQueriesContext


def main() -> None:
    with connection.schema_editor() as editor:
        for model in (TodoList, Todo, PlainTodo):
            editor.create_model(model)
    TodoList.objects.bulk_create([TodoList(pk=n, name=f"list {n}") for n in (1, 2, 3)])

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> int:
        await rt.start()
        return (await listen(rt)).port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    print(f"port {port}", flush=True)
    namespace = globals()
    for line in sys.stdin:
        code = json.loads(line)
        namespace.pop("result", None)
        try:
            exec(code, namespace)
            answer = {"result": namespace.get("result")}
        except Exception:
            answer = {"error": traceback.format_exc()}
        print(json.dumps(answer, default=str), flush=True)
    asyncio.run_coroutine_threadsafe(rt.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
