"""Start the todo example: `make example NAME=todo` (PORT=8000 unless given).

One process: migrate a SQLite database (in a temporary directory that is removed on exit,
unless TODO_DB names a file to keep), add the demo users, lists and items if missing, then
serve the Django site with Tidings in front of it (``rt.asgi(django_app)``) under uvicorn
on 127.0.0.1:$PORT. Ctrl-C (or SIGTERM) tells the pages to reconnect, stops and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

import uvicorn

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
# Demo only: every demo user has this password (the login page says so).
PASSWORD = os.environ.get("TODO_PASSWORD", "todo-demo")
USERS = [("alice", "Alice", "Archer"), ("bob", "Bob", "Brown"), ("carol", "Carol", "Chen")]
# (name, members, items): carol is not on the first two lists, nor bob on the third.
LISTS = [
    ("Groceries", ("alice", "bob"), ("Oat milk", "Bread", "Coffee beans")),
    ("Weekend", ("alice", "bob"), ("Fix the bike",)),
    ("Book club", ("alice", "carol"), ("Pick the next book",)),
]


def prepare_database() -> None:
    """Create the tables, and the demo users, lists and items the first time."""
    import django
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    call_command("migrate", verbosity=0)
    from todos.models import Todo, TodoList

    users = get_user_model()
    missing = [user for user in USERS if not users.objects.filter(username=user[0]).exists()]
    hashed = make_password(PASSWORD)  # once: hashing takes a good part of a second
    for username, first, last in missing:
        users.objects.create(username=username, password=hashed, first_name=first, last_name=last)
    if not TodoList.objects.exists():
        for name, members, titles in LISTS:
            todo_list = TodoList.objects.create(name=name)
            todo_list.members.set(users.objects.filter(username__in=members))
            for title in titles:
                Todo.objects.create(list=todo_list, title=title)
    connections.close_all()  # opened in this thread; the views open their own


def announce_when_ready(server: uvicorn.Server, url: str) -> None:
    """Print the ready line once the site answers (the tests wait for it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.should_exit:
        if server.started:
            try:
                with urllib.request.urlopen(url + "login/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
        time.sleep(0.05)
    else:
        return
    logins = ", ".join(name for name, _, _ in USERS)
    password = "TODO_PASSWORD" if "TODO_PASSWORD" in os.environ else repr(PASSWORD)
    print(f"todo is ready: open {url} (sign in as {logins}; password {password})", flush=True)


def serve(port: int) -> None:
    from todo_site.asgi import application

    config = uvicorn.Config(
        application,
        host=HOST,
        port=port,
        # Browsers offer compression; with it on, every delivery is compressed once per
        # recipient. Tidings' advice for uvicorn.
        ws_per_message_deflate=False,
        access_log=False,
    )
    server = uvicorn.Server(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Before uvicorn has started: it then stops at once. After: uvicorn raises the
        # signal again once it has shut down, and it lands here rather than ending the
        # process with KeyboardInterrupt (SIGINT) or status 143 (SIGTERM).
        server.should_exit = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    url = f"http://{HOST}:{port}/"
    threading.Thread(target=announce_when_ready, args=(server, url), daemon=True).start()
    # Tidings starts with uvicorn's lifespan and puts its drain in front of uvicorn's
    # signal handlers: on Ctrl-C every page is told to reconnect (4200), then uvicorn stops.
    server.run()


def stop_before_serving(signum: int, frame: FrameType | None) -> None:
    # Ctrl-C during the migrations: leave through the `with` blocks (the temporary
    # database is removed), quietly and with status 0, as once serving.
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGINT, stop_before_serving)
    signal.signal(signal.SIGTERM, stop_before_serving)
    port = int(os.environ.get("PORT", "8000"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "todo_site.settings"
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory(prefix="tidings-todo-") as scratch:
        os.environ.setdefault("TODO_DB", str(Path(scratch) / "db.sqlite3"))
        print(f"todo: database {os.environ['TODO_DB']}", flush=True)
        prepare_database()
        serve(port)


if __name__ == "__main__":
    main()
