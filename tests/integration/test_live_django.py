"""Live Django models end to end: a real Django site (live_django_app.py, a child process,
on SQLite and on PostgreSQL) saves rows through the ORM and its views; its embedded
Realtime publishes to real WebSocket clients here."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from pusher_helpers import TIMEOUT, PusherSocket, SocketOpener

pytestmark = pytest.mark.timeout(20 * TIMEOUT)

APP = Path(__file__).with_name("live_django_app.py")
DOC = Path(__file__).resolve().parents[2] / "docs" / "live.md"
FENCES = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LIST1 = "private-live.todo.list_id.1"
LIST2 = "private-live.todo.list_id.2"


class Site:
    """The child Django process, one for the module (it takes seconds to start on a busy
    machine): ``await site.run(code)`` runs Python there. Each test starts with no todos."""

    def __init__(self, child: subprocess.Popen[str], ws_url: str) -> None:
        self.child = child
        self.ws_url = ws_url
        self.lock = threading.Lock()

    def line(self) -> str:
        assert self.child.stdout is not None
        text = self.child.stdout.readline().strip()
        if not text:
            raise AssertionError("the Django process ended (its stderr is in the test output)")
        return text

    def run_sync(self, code: str) -> Any:
        assert self.child.stdin is not None
        with self.lock:
            self.child.stdin.write(json.dumps(code) + "\n")
            self.child.stdin.flush()
            answer = json.loads(self.line())
        assert "error" not in answer, answer["error"]
        return answer["result"]

    async def run(self, code: str) -> Any:
        async with asyncio.timeout(6 * TIMEOUT):
            return await asyncio.to_thread(self.run_sync, code)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def django_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The site on SQLite, then on a database of the session's PostgreSQL cluster."""
    directory = tmp_path_factory.mktemp("live_django")
    database: list[str] = []
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        name = postgres.create_database()
        request.addfinalizer(lambda: postgres.drop_database(name))
        database.append(postgres.url(name))
    child = subprocess.Popen(
        [sys.executable, str(APP), str(directory), *database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=directory,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline().strip().removeprefix("port "))
        yield Site(child, f"ws://127.0.0.1:{port}")
        child.stdin.close()
        assert child.wait(6 * TIMEOUT) == 0
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
async def site(django_site: Site) -> Site:
    await django_site.run("Todo.objects.all()._raw_delete(connection.alias)")
    return django_site


async def watcher(site: Site, open_socket: SocketOpener, *channels: str) -> PusherSocket:
    """A client subscribed to ``channels``, their snapshots (empty lists) read."""
    client = await open_socket(site.ws_url)
    for channel in channels:
        await client.subscribe_private(channel)
        snapshot = await client.expect("tidings:snapshot", channel)
        assert json.loads(snapshot["data"]) == {"rows": [], "version": 0}
    return client


async def event(client: PusherSocket, channel: str = LIST1) -> tuple[str, dict[str, Any]]:
    message = await client.recv()
    assert message["channel"] == channel, message
    return message["event"], json.loads(message["data"])


async def test_created_updated_deleted_with_only_the_changed_fields(
    site: Site, open_socket: SocketOpener
) -> None:
    client = await watcher(site, open_socket, LIST1)
    # Outside a transaction (autocommit) the save publishes at once.
    todo_id = await site.run("result = Todo.objects.create(title='milk', list_id=1).pk")
    assert await event(client) == (
        "created",
        {"id": todo_id, "title": "milk", "done": False, "list_id": 1, "version": 1},
    )
    await site.run(
        f"with transaction.atomic():\n"
        f"    todo = Todo.objects.get(pk={todo_id})\n"
        f"    todo.done = True\n"
        f"    todo.save()\n"
        f"    todo.notes = 'not a live field'\n"
        f"    todo.save()\n"
    )
    # Two saves, one event: the folded change, with the version of the last save.
    assert await event(client) == ("updated", {"id": todo_id, "version": 3, "done": True})
    await site.run(f"Todo.objects.get(pk={todo_id}).delete()")
    assert await event(client) == ("deleted", {"id": todo_id, "version": 4})
    # A save of no live field publishes nothing (the next event is the next create).
    await site.run(
        "todo = Todo.objects.create(title='eggs', list_id=1)\n"
        "todo = Todo.objects.get(pk=todo.pk)\n"
        "todo.notes = 'x'\n"
        "todo.save()\n"
        "Todo.objects.create(title='bread', list_id=1)\n"
    )
    assert (await event(client))[1]["title"] == "eggs"
    assert (await event(client))[1]["title"] == "bread"
    # The version is saved along with update_fields, after a refresh, and when deferred.
    versions = await site.run(
        "todo = Todo.objects.create(title='v', list_id=1)\n"
        "todo.done = True\n"
        "todo.save(update_fields=['done'])\n"
        "todo.refresh_from_db()\n"
        "saved = [todo.version]\n"
        "todo.title = 'w'\n"
        "todo.save()\n"
        "saved.append(Todo.objects.get(pk=todo.pk).version)\n"
        "deferred = Todo.objects.only('id', 'title').get(pk=todo.pk)\n"
        "deferred.title = 'x'\n"
        "deferred.save()\n"
        "saved.append(Todo.objects.get(pk=todo.pk).version)\n"
        "result = saved\n"
    )
    assert versions == [2, 3, 4]
    got = [await event(client) for _ in range(4)]
    assert got[1:] == [
        ("updated", {"id": ANY, "version": 2, "done": True}),
        ("updated", {"id": ANY, "version": 3, "title": "w"}),
        ("updated", {"id": ANY, "version": 4, "title": "x"}),
    ]


async def test_rollback_sends_nothing_and_a_savepoint_drops_only_its_part(
    site: Site, open_socket: SocketOpener
) -> None:
    client = await watcher(site, open_socket, LIST1)
    await site.run(
        "class Boom(Exception): pass\n"
        "try:\n"
        "    with transaction.atomic():\n"
        "        Todo.objects.create(title='rolled back', list_id=1)\n"
        "        raise Boom\n"
        "except Boom:\n"
        "    pass\n"
        "with transaction.atomic():\n"
        "    Todo.objects.create(title='outer', list_id=1)\n"
        "    try:\n"
        "        with transaction.atomic():\n"
        "            Todo.objects.create(title='in the savepoint', list_id=1)\n"
        "            with transaction.atomic():\n"
        "                Todo.objects.create(title='nested deeper', list_id=1)\n"
        "            raise Boom\n"
        "    except Boom:\n"
        "        pass\n"
        "    with transaction.atomic():\n"
        "        Todo.objects.create(title='released savepoint', list_id=1)\n"
        "    Todo.objects.create(title='after', list_id=1)\n"
    )
    titles = [(await event(client))[1]["title"] for _ in range(3)]
    assert titles == ["outer", "released savepoint", "after"]
    rows = await site.run("result = list(Todo.objects.values_list('title', flat=True))")
    assert sorted(rows) == sorted(titles)
    await site.run("Todo.objects.create(title='marker', list_id=1)")
    assert (await event(client))[1]["title"] == "marker"


async def test_an_instance_saved_in_what_rolled_back_is_compared_with_the_database(
    site: Site, open_socket: SocketOpener
) -> None:
    # Django leaves a rolled-back save's values in the instance; its next save writes them.
    # The events must describe that write against the row as committed, not as rolled back.
    first = await watcher(site, open_socket, LIST1)
    second = await watcher(site, open_socket, LIST2)
    todo_id = await site.run("result = Todo.objects.create(title='keep me', list_id=1).pk")
    assert (await event(first))[0] == "created"
    stored = await site.run(
        f"class Boom(Exception): pass\n"
        f"todo = Todo.objects.get(pk={todo_id})\n"
        f"with transaction.atomic():\n"
        f"    try:\n"
        f"        with transaction.atomic():\n"
        f"            todo.list_id = 2\n"
        f"            todo.save()\n"
        f"            raise Boom\n"
        f"    except Boom:\n"
        f"        pass\n"
        f"    todo.title = 'moved after all'  # list_id is still 2 in memory\n"
        f"    todo.save()\n"
        f"try:\n"
        f"    with transaction.atomic():\n"
        f"        todo.done = True\n"
        f"        todo.save()\n"
        f"        raise Boom\n"
        f"except Boom:\n"
        f"    pass\n"
        f"todo.save()  # done is still True in memory: now it is saved\n"
        f"result = list(Todo.objects.filter(pk={todo_id}).values_list(\n"
        f"    'title', 'done', 'list_id', 'version').get())\n"
    )
    assert stored == ["moved after all", True, 2, 3]
    assert await event(first) == ("deleted", {"id": todo_id, "version": 2})
    assert await event(second, LIST2) == (
        "created",
        {"id": todo_id, "title": "moved after all", "done": False, "list_id": 2, "version": 2},
    )
    assert await event(second, LIST2) == ("updated", {"id": todo_id, "version": 3, "done": True})


async def test_a_filter_move_is_deleted_on_the_old_list_and_created_on_the_new(
    site: Site, open_socket: SocketOpener
) -> None:
    first = await watcher(site, open_socket, LIST1)
    second = await watcher(site, open_socket, LIST2)
    todo_id = await site.run("result = Todo.objects.create(title='move me', list_id=1).pk")
    assert (await event(first))[0] == "created"
    queries = await site.run(
        f"todo = Todo.objects.get(pk={todo_id})\n"
        f"with capture(connection) as queries:\n"
        f"    with transaction.atomic():\n"
        f"        todo.list_id = 2\n"
        f"        todo.save()\n"
        f"result = [q['sql'] for q in queries.captured_queries]\n"
    )
    assert not any(sql.startswith("SELECT") for sql in queries)  # old values: no query
    assert await event(first) == ("deleted", {"id": todo_id, "version": 2})
    assert await event(second, LIST2) == (
        "created",
        {"id": todo_id, "title": "move me", "done": False, "list_id": 2, "version": 2},
    )


async def test_bulk_paths(site: Site, open_socket: SocketOpener) -> None:
    client = await watcher(site, open_socket, LIST1)
    ids = await site.run(
        "with transaction.atomic():\n"
        "    made = Todo.objects.bulk_create(\n"
        "        [Todo(title=f'bulk {n}', list_id=1, version=1) for n in range(3)])\n"
        "    ids = [todo.pk for todo in made]\n"
        "    rt.live_touch(Todo, ids)\n"
        "result = ids\n"
    )
    created = [await event(client) for _ in ids]
    assert [(name, data["id"], data["title"]) for name, data in created] == [
        ("created", ids[n], f"bulk {n}") for n in range(3)
    ]
    await site.run(
        "from django.db.models import F\n"
        "with transaction.atomic():\n"
        "    Todo.objects.filter(pk__in=ids).update(done=True, version=F('version') + 1)\n"
        "    rt.live_touch(Todo, ids)\n"
    )
    for todo_id in ids:
        name, data = await event(client)
        assert (name, data["id"], data["done"], data["version"]) == ("created", todo_id, True, 2)
    # QuerySet.delete() sends post_delete per row: it publishes by itself.
    await site.run(f"Todo.objects.filter(pk={ids[0]}).delete()")
    assert await event(client) == ("deleted", {"id": ids[0], "version": 3})
    # A delete no signal sees: live_touch before it, in the same transaction.
    await site.run(
        f"with transaction.atomic():\n"
        f"    rt.live_touch(Todo, [{ids[1]}], deleted=True)\n"
        f"    with connection.cursor() as cursor:\n"
        f"        cursor.execute('DELETE FROM live_todo WHERE id = %s', [{ids[1]}])\n"
    )
    assert await event(client) == ("deleted", {"id": ids[1], "version": 3})
    # ... or after it, with the rows as read before.
    await site.run(
        f"rows = list(Todo.objects.filter(pk={ids[2]}).values('id', 'list_id', 'version'))\n"
        f"Todo.objects.filter(pk={ids[2]})._raw_delete(connection.alias)\n"
        f"rt.live_touch(Todo, [{ids[2]}], deleted=True, rows=rows)\n"
    )
    assert await event(client) == ("deleted", {"id": ids[2], "version": 3})


async def made(site: Site, client: PusherSocket, count: int) -> list[int]:
    """``count`` todos created on list 1, their ``created`` events read."""
    ids: list[int] = await site.run(
        f"result = [Todo.objects.create(title=f'bulk {{n}}', list_id=1).pk\n"
        f"          for n in range({count})]\n"
    )
    assert [(await event(client))[1]["id"] for _ in ids] == ids
    return ids


async def test_a_bulk_update_in_live_changes_moves_rows_between_lists(
    site: Site, open_socket: SocketOpener
) -> None:
    first = await watcher(site, open_socket, LIST1)
    second = await watcher(site, open_socket, LIST2)
    ids = await made(site, first, 3)
    statements = await site.run(
        f"from django.db.models import F\n"
        f"ids = {ids}\n"
        f"with capture(connection) as queries:\n"
        f"    with rt.live_changes(Todo, ids):\n"
        f"        Todo.objects.filter(pk__in=ids[:2]).update(\n"
        f"            list_id=2, version=F('version') + 1)\n"
        f"        Todo.objects.filter(pk=ids[2]).update(done=True, version=F('version') + 1)\n"
        f"result = [q['sql'].split()[0] for q in queries.captured_queries]\n"
    )
    # Outside a transaction the block is one: the reads before and after, the two UPDATEs.
    assert [s for s in statements if s in ("SELECT", "UPDATE")] == [
        "SELECT",
        "UPDATE",
        "UPDATE",
        "SELECT",
    ]
    assert [await event(first) for _ in range(3)] == [
        ("deleted", {"id": ids[0], "version": 2}),
        ("deleted", {"id": ids[1], "version": 2}),
        ("updated", {"id": ids[2], "version": 2, "done": True}),
    ]
    assert [await event(second, LIST2) for _ in range(2)] == [
        ("created", {"id": n, "title": f"bulk {i}", "done": False, "list_id": 2, "version": 2})
        for i, n in enumerate(ids[:2])
    ]
    # Rows the block deletes or creates among its ids are published as such.
    created = await site.run(
        f"with transaction.atomic():\n"
        f"    with rt.live_changes(Todo, [{ids[2]}, 999]):\n"
        f"        Todo.objects.filter(pk={ids[2]})._raw_delete(connection.alias)\n"
        f"        Todo.objects.bulk_create([Todo(pk=999, title='new', list_id=1, version=1)])\n"
        f"result = 999\n"
    )
    assert [await event(first) for _ in range(2)] == [
        ("created", {"id": created, "title": "new", "done": False, "list_id": 1, "version": 1}),
        ("deleted", {"id": ids[2], "version": 3}),
    ]


async def test_the_doc_bulk_paths_publish_as_the_docs_say(
    site: Site, open_socket: SocketOpener
) -> None:
    # docs/live.md's "Bulk paths" block, as written, with the `titles` it takes.
    five, six = "private-live.todo.list_id.5", "private-live.todo.list_id.6"
    on_five = await watcher(site, open_socket, five)
    on_six = await watcher(site, open_socket, six)
    a, b, c = await site.run(
        "for pk in (5, 6):\n"
        "    TodoList.objects.get_or_create(pk=pk, defaults={'name': f'list {pk}'})\n"
        "result = [Todo.objects.create(title=t, list_id=5, done=d).pk\n"
        "          for t, d in (('a', False), ('b', True), ('c', False))]\n"
    )
    assert [(await event(on_five, five))[1]["id"] for _ in range(3)] == [a, b, c]
    code = doc_block("from django.db import transaction\nfrom django.db.models import F\n")
    await site.run(f"exec({code!r}, {{**globals(), 'titles': ['x', 'y']}})\n")
    # The open todos move from 5 to 6; two new ones on 5; then the moved ones are done.
    assert [await event(on_five, five) for _ in range(2)] == [
        ("deleted", {"id": a, "version": 2}),
        ("deleted", {"id": c, "version": 2}),
    ]
    created = [await event(on_five, five) for _ in range(2)]
    assert [(name, data["title"], data["version"]) for name, data in created] == [
        ("created", "x", 1),
        ("created", "y", 1),
    ]
    assert [await event(on_six, six) for _ in range(4)] == [
        ("created", {"id": a, "title": "a", "done": False, "list_id": 6, "version": 2}),
        ("created", {"id": c, "title": "c", "done": False, "list_id": 6, "version": 2}),
        ("updated", {"id": a, "version": 3, "done": True}),
        ("updated", {"id": c, "version": 3, "done": True}),
    ]


async def test_live_changes_sends_nothing_of_what_rolls_back(
    site: Site, open_socket: SocketOpener
) -> None:
    first = await watcher(site, open_socket, LIST1)
    second = await watcher(site, open_socket, LIST2)
    ids = await made(site, first, 3)
    lists = await site.run(
        f"import contextlib\n"
        f"from django.db.models import F\n"
        f"class Boom(Exception): pass\n"
        f"def move(pk, **values):\n"
        f"    with rt.live_changes(Todo, [pk]):\n"
        f"        Todo.objects.filter(pk=pk).update(**values, version=F('version') + 1)\n"
        f"# An exception leaving the block, in a transaction and on its own.\n"
        f"for outer in (transaction.atomic, contextlib.nullcontext):\n"
        f"    try:\n"
        f"        with outer():\n"
        f"            with rt.live_changes(Todo, [{ids[0]}]):\n"
        f"                Todo.objects.filter(pk={ids[0]}).update(list_id=2)\n"
        f"                raise Boom\n"
        f"    except Boom:\n"
        f"        pass\n"
        f"# A transaction that rolls back after the block.\n"
        f"try:\n"
        f"    with transaction.atomic():\n"
        f"        move({ids[0]}, list_id=2)\n"
        f"        raise Boom\n"
        f"except Boom:\n"
        f"    pass\n"
        f"# A savepoint rolled back drops its block; the rest of the transaction publishes.\n"
        f"with transaction.atomic():\n"
        f"    move({ids[1]}, title='kept')\n"
        f"    try:\n"
        f"        with transaction.atomic():\n"
        f"            move({ids[2]}, list_id=2)\n"
        f"            raise Boom\n"
        f"    except Boom:\n"
        f"        pass\n"
        f"    move({ids[0]}, done=True)\n"
        f"result = list(Todo.objects.order_by('pk').values_list('list_id', flat=True))\n"
    )
    assert lists == [1, 1, 1]
    assert [await event(first) for _ in range(2)] == [
        ("updated", {"id": ids[1], "version": 2, "title": "kept"}),
        ("updated", {"id": ids[0], "version": 2, "done": True}),
    ]
    marker = await site.run("result = Todo.objects.create(title='marker', list_id=2).pk")
    assert (await event(second, LIST2))[1]["id"] == marker


async def test_live_touch_with_the_old_rows_compares_without_a_query(
    site: Site, open_socket: SocketOpener
) -> None:
    first = await watcher(site, open_socket, LIST1)
    second = await watcher(site, open_socket, LIST2)
    ids = await made(site, first, 2)
    statements = await site.run(
        f"from django.db.models import F\n"
        f"ids = {ids}\n"
        f"old = list(Todo.objects.filter(pk__in=ids).order_by('pk'))  # instances\n"
        f"with capture(connection) as queries:\n"
        f"    with transaction.atomic():\n"
        f"        Todo.objects.filter(pk=ids[0]).update(list_id=2, version=F('version') + 1)\n"
        f"        Todo.objects.filter(pk=ids[1]).update(title='renamed', version=2)\n"
        f"        rt.live_touch(Todo, ids, old=old)\n"
        f"result = [q['sql'].split()[0] for q in queries.captured_queries]\n"
    )
    assert statements.count("SELECT") == 1  # the rows after: the old ones are given
    assert [await event(first) for _ in range(2)] == [
        ("deleted", {"id": ids[0], "version": 2}),
        ("updated", {"id": ids[1], "version": 2, "title": "renamed"}),
    ]
    assert await event(second, LIST2) == (
        "created",
        {"id": ids[0], "title": "bulk 0", "done": False, "list_id": 2, "version": 2},
    )
    # Old and new rows both given (mappings with the key, the version and the filters):
    # no query at all; fields the old rows lack count as changed.
    statements = await site.run(
        f"ids = {ids}\n"
        f"with capture(connection) as queries:\n"
        f"    with transaction.atomic():\n"
        f"        Todo.objects.filter(pk=ids[0]).update(list_id=1, version=3)\n"
        f"        rt.live_touch(Todo, ids[:1],\n"
        f"            old=[{{'id': ids[0], 'list_id': 2, 'version': 2}}],\n"
        f"            rows=[{{'id': ids[0], 'title': 'bulk 0', 'list_id': 1, 'version': 3}}])\n"
        f"result = [q['sql'].split()[0] for q in queries.captured_queries]\n"
    )
    assert "SELECT" not in statements
    assert await event(second, LIST2) == ("deleted", {"id": ids[0], "version": 3})
    assert await event(first) == (
        "created",
        {"id": ids[0], "title": "bulk 0", "list_id": 1, "version": 3},
    )
    refusals = await site.run(
        "def refusal(call):\n"
        "    try:\n"
        "        call()\n"
        "    except (TypeError, ValueError) as exc:\n"
        "        return str(exc)\n"
        "def enter_with_a_session():\n"
        "    with rt.live_changes(Todo, [1], session=object()):\n"
        "        pass\n"
        "result = [refusal(lambda: rt.live_touch(Todo, [1], deleted=True, old=[])),\n"
        "          refusal(enter_with_a_session)]\n"
    )
    assert refusals == [
        "live_touch: old= compares saved rows; deleted=True takes rows=",
        "live_changes(session=...) is for SQLAlchemy models, not Django's",
    ]


async def test_a_payload_over_the_limit_is_sent_stale(
    site: Site, open_socket: SocketOpener
) -> None:
    client = await watcher(site, open_socket, LIST1)
    todo_id = await site.run("result = Todo.objects.create(title='x' * 700, list_id=1).pk")
    assert await event(client) == ("created", {"id": todo_id, "version": 1, "stale": True})


async def test_one_occupied_question_per_commit_and_no_serialization_when_unwatched(
    site: Site, open_socket: SocketOpener
) -> None:
    client = await watcher(site, open_socket, LIST1)
    counts = await site.run(
        "import tidings.live.model as live_model\n"
        "serialized, asked = [], []\n"
        "serialize, occupied = live_model.serialize, rt.aoccupied\n"
        "def counting_serialize(data):\n"
        "    serialized.append(data)\n"
        "    return serialize(data)\n"
        "async def counting_occupied(channels):\n"
        "    asked.append(sorted(channels))\n"
        "    return await occupied(channels)\n"
        "live_model.serialize, rt.aoccupied = counting_serialize, counting_occupied\n"
        "with transaction.atomic():\n"
        "    for n in range(5):\n"
        "        Todo.objects.create(title=f'unwatched {n}', list_id=3)\n"
        "rt.live_models.wait()  # publishing is queued: wait for it before counting\n"
        "unwatched = [len(serialized), len(asked)]\n"
        "with transaction.atomic():\n"
        "    for n in range(4):\n"
        "        Todo.objects.create(title=f'todo {n}', list_id=n % 2 + 1)\n"
        "rt.live_models.wait()\n"
        "live_model.serialize, rt.aoccupied = serialize, occupied\n"
        "result = [unwatched, len(serialized), asked]\n"
    )
    assert counts == [
        [0, 1],  # a model nobody watches: one lookup, nothing serialized
        2,  # only the rows of the watched list
        [["private-live.todo.list_id.3"], [LIST1, LIST2]],
    ]
    titles = [(await event(client))[1]["title"] for _ in range(2)]
    assert titles == ["todo 0", "todo 2"]


async def test_the_sender_is_excluded_through_a_django_view(
    site: Site, open_socket: SocketOpener
) -> None:
    sender = await watcher(site, open_socket, LIST1)
    other = await watcher(site, open_socket, LIST1)
    created = await site.run(
        f"response = client.post('/todos', {{'title': 'from a view', 'list': '1'}},\n"
        f"                       headers={{'X-Socket-ID': '{sender.socket_id}'}})\n"
        f"result = [response.status_code, response.json()]\n"
    )
    assert created[0] == 201
    todo_id = created[1]["id"]
    assert await event(other) == (
        "created",
        {"id": todo_id, "title": "from a view", "done": False, "list_id": 1, "version": 1},
    )
    status = await site.run(
        f"result = client.post('/todos/{todo_id}', {{'done': 'true'}},\n"
        f"                     headers={{'X-Socket-ID': '{sender.socket_id}'}}).status_code\n"
    )
    assert status == 200
    assert await event(other) == ("updated", {"id": todo_id, "version": 2, "done": True})
    # A malformed X-Socket-ID excludes nobody (and does not get the publish refused).
    await site.run(f"client.post('/todos/{todo_id}/delete', headers={{'X-Socket-ID': 'nonsense'}})")
    assert await event(other) == ("deleted", {"id": todo_id, "version": 3})
    assert await event(sender) == ("deleted", {"id": todo_id, "version": 3})


def doc_block(starts: str) -> str:
    """The Python block of docs/live.md that begins with ``starts`` (exactly one)."""
    blocks: list[str] = FENCES.findall(DOC.read_text())
    found = [code for code in blocks if code.startswith(starts)]
    assert len(found) == 1, f"docs/live.md has {len(found)} blocks starting {starts!r}"
    return found[0]


async def test_the_doc_views_publish_to_everyone_but_the_sender(
    site: Site, open_socket: SocketOpener
) -> None:
    # docs/live.md's plain Django views, as written (their model import aside), routed here.
    views = doc_block("from django.db import transaction\nfrom django.http")
    assert "from .models import Todo\n" in views
    await site.run(
        f"from django.urls import clear_url_caches\n"
        f"views = {{'__name__': 'docs_django_views', 'Todo': Todo}}\n"
        f"exec({views.replace('from .models import Todo', '')!r}, views)\n"
        f"urlpatterns += [\n"
        f"    path('doc/lists/<int:list_id>/todos', views['create_todo']),\n"
        f"    path('doc/todos/<int:pk>', views['update_todo']),\n"
        f"    path('doc/todos/<int:pk>/delete', views['delete_todo']),\n"
        f"]\n"
        f"clear_url_caches()\n"
    )
    sender = await watcher(site, open_socket, LIST1)
    other = await watcher(site, open_socket, LIST1)
    mine = {"X-Socket-ID": sender.socket_id}

    async def post(path: str, form: dict[str, str], headers: dict[str, str]) -> Any:
        return await site.run(
            f"response = client.post({path!r}, {form!r}, headers={headers!r})\n"
            f"result = [response.status_code, json.loads(response.content or 'null')]\n"
        )

    assert await post("/doc/lists/1/todos", {"title": " "}, mine) == [
        400,
        {"error": "a todo needs a title"},
    ]
    status, created = await post("/doc/lists/1/todos", {"title": "Tea"}, mine)
    assert status == 201
    todo_id = created["id"]
    assert await event(other) == (
        "created",
        {"id": todo_id, "title": "Tea", "done": False, "list_id": 1, "version": 1},
    )
    assert await post(f"/doc/todos/{todo_id}", {"done": "true"}, mine) == [
        200,
        {"id": todo_id, "version": 2},
    ]
    assert await event(other) == ("updated", {"id": todo_id, "version": 2, "done": True})
    assert await post(f"/doc/todos/{todo_id}/delete", {}, mine) == [204, None]
    assert await event(other) == ("deleted", {"id": todo_id, "version": 3})
    # Without the header it reaches both: the sender's first event is this one.
    _, marker = await post("/doc/lists/1/todos", {"title": "marker"}, {})
    assert (await event(sender))[1]["id"] == marker["id"]
    assert (await event(other))[1]["id"] == marker["id"]


async def test_the_doc_rest_framework_viewset_publishes_to_everyone_but_the_sender(
    site: Site, open_socket: SocketOpener
) -> None:
    # docs/live.md's Django REST framework ModelViewSet, as written, under a router.
    views = doc_block("from rest_framework import")
    assert "from .models import Todo\n" in views
    await site.run(
        f"from django.urls import clear_url_caches\n"
        f"from rest_framework.routers import SimpleRouter\n"
        f"drf = {{'__name__': 'docs_drf_views', 'Todo': Todo}}\n"
        f"exec({views.replace('from .models import Todo', '')!r}, drf)\n"
        f"router = SimpleRouter()\n"
        f"router.register('drf/todos', drf['TodoViewSet'])\n"
        f"urlpatterns += router.urls\n"
        f"clear_url_caches()\n"
    )
    sender = await watcher(site, open_socket, LIST1)
    other = await watcher(site, open_socket, LIST1)

    async def call(method: str, path: str, body: dict[str, Any], socket_id: str | None) -> Any:
        headers = {} if socket_id is None else {"X-Socket-ID": socket_id}
        return await site.run(
            f"response = client.{method}({path!r}, {json.dumps(body)!r},\n"
            f"    content_type='application/json', headers={headers!r})\n"
            f"result = [response.status_code, json.loads(response.content or 'null')]\n"
        )

    mine = sender.socket_id
    status, created = await call("post", "/drf/todos/", {"title": "Tea", "list": 1}, mine)
    assert status == 201, created
    todo_id = created["id"]
    assert created == {"id": todo_id, "title": "Tea", "done": False, "list": 1, "version": 1}
    assert await event(other) == (
        "created",
        {"id": todo_id, "title": "Tea", "done": False, "list_id": 1, "version": 1},
    )
    # The version is read-only: a client cannot set it.
    status, updated = await call(
        "patch", f"/drf/todos/{todo_id}/", {"done": True, "version": 40}, mine
    )
    assert (status, updated["version"]) == (200, 2)
    assert await event(other) == ("updated", {"id": todo_id, "version": 2, "done": True})
    status, moved = await call("patch", f"/drf/todos/{todo_id}/", {"list": 2}, mine)
    assert (status, moved["version"]) == (200, 3)
    assert await event(other) == ("deleted", {"id": todo_id, "version": 3})
    assert await call("delete", f"/drf/todos/{todo_id}/", {}, mine) == [204, None]
    status, marker = await call("post", "/drf/todos/", {"title": "marker", "list": 1}, None)
    assert (await event(sender))[1]["id"] == marker["id"]
    assert (await event(other))[1]["id"] == marker["id"]


async def test_authorize_at_pusher_auth(site: Site) -> None:
    answers = await site.run(
        "def auth(user, channel):\n"
        "    headers = {'X-User': user} if user else {}\n"
        "    response = client.post('/pusher/auth',\n"
        "        {'socket_id': '1.2', 'channel_name': channel}, headers=headers)\n"
        "    return response.status_code\n"
        "result = [auth('ann', 'private-live.todo.list_id.1'),\n"
        "          auth('bob', 'private-live.todo.list_id.2'),\n"
        "          auth('bob', 'private-live.todo.list_id.1'),\n"
        "          auth(None, 'private-live.todo.list_id.2'),\n"
        "          auth('ann', 'private-live.todo.title.1'),\n"
        "          auth('ann', 'private-live.todo')]\n"
    )
    assert answers == [200, 200, 403, 403, 403, 403]


async def test_the_snapshot_route_and_provider(site: Site) -> None:
    answers = await site.run(
        "import hashlib, hmac\n"
        "a = Todo.objects.create(title='a', list_id=2)\n"
        "b = Todo.objects.create(title='b', list_id=2)\n"
        "b.done = True\n"
        "b.save()\n"
        "Todo.objects.create(title='elsewhere', list_id=1)\n"
        "def snapshot(channel, secret='app-secret'):\n"
        "    body = json.dumps({'channel': channel, 'socket_id': '1.2'}).encode()\n"
        "    signed = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()\n"
        "    response = client.post('/pusher/live-snapshot', body,\n"
        "        content_type='application/json',\n"
        "        headers={'X-Pusher-Key': 'app-key', 'X-Pusher-Signature': signed})\n"
        "    return [response.status_code, response.json()]\n"
        "from_node = asyncio.run_coroutine_threadsafe(\n"
        "    rt.live_models.snapshot(rt.app, 'private-live.todo.list_id.2', '1.2'),\n"
        "    rt.loop).result(10)\n"
        "result = [[a.pk, b.pk], snapshot('private-live.todo.list_id.2'),\n"
        "          snapshot('private-live.todo.list_id.2', secret='wrong'),\n"
        "          snapshot('private-live.nothing.list_id.2'),\n"
        "          json.loads(from_node)]\n"
    )
    (a, b), *answers = answers
    rows = [
        {"id": a, "title": "a", "done": False, "list_id": 2, "version": 1},
        {"id": b, "title": "b", "done": True, "list_id": 2, "version": 2},
    ]
    assert answers == [
        [200, {"rows": rows, "version": 2}],
        [401, {"error": "invalid snapshot request signature"}],
        [404, {"error": "no live model publishes to private-live.nothing.list_id.2"}],
        {"rows": rows, "version": 2},
    ]


async def test_a_subscription_starts_with_the_snapshot_of_its_list(
    site: Site, open_socket: SocketOpener
) -> None:
    ids = await site.run(
        "first = Todo.objects.create(title='first', list_id=2)\n"
        "second = Todo.objects.create(title='second', list_id=2)\n"
        "second.done = True\n"
        "second.save()\n"
        "Todo.objects.create(title='elsewhere', list_id=1)\n"
        "result = [first.pk, second.pk]\n"
    )
    client = await open_socket(site.ws_url)
    await client.subscribe_private(LIST2)
    snapshot = await client.expect("tidings:snapshot", LIST2)
    assert json.loads(snapshot["data"]) == {
        "rows": [
            {"id": ids[0], "title": "first", "done": False, "list_id": 2, "version": 1},
            {"id": ids[1], "title": "second", "done": True, "list_id": 2, "version": 2},
        ],
        "version": 2,
    }
    await site.run(f"Todo.objects.filter(pk={ids[0]}).delete()")
    assert await event(client, LIST2) == ("deleted", {"id": ids[0], "version": 2})


async def test_no_query_is_added_per_save(site: Site, open_socket: SocketOpener) -> None:
    await watcher(site, open_socket, LIST1)  # watched: the publish really happens
    counts = await site.run(
        "def cost(model):\n"
        "    counts = []\n"
        "    with capture(connection) as queries:\n"
        "        with transaction.atomic():\n"
        "            row = model.objects.create(title='t', list_id=1, version=1)\n"
        "    counts.append(len(queries))\n"
        "    with capture(connection) as queries:\n"
        "        rows = list(model.objects.filter(list_id=1))\n"
        "    counts.append(len(queries))\n"
        "    row = model.objects.get(pk=row.pk)\n"
        "    with capture(connection) as queries:\n"
        "        with transaction.atomic():\n"
        "            row.title = 'u'\n"
        "            row.version += model is PlainTodo\n"
        "            row.save()\n"
        "    counts.append(len(queries))\n"
        "    with capture(connection) as queries:\n"
        "        with transaction.atomic():\n"
        "            row.delete()\n"
        "    counts.append(len(queries))\n"
        "    return counts\n"
        "result = [cost(Todo), cost(PlainTodo)]\n"
    )
    assert counts[0] == counts[1], counts
    # Outside a transaction, a delete signal receiver makes Django wrap the DELETE in a
    # transaction of its own (BEGIN, COMMIT): still no SELECT.
    statements = await site.run(
        "row = Todo.objects.create(title='t', list_id=1)\n"
        "with capture(connection) as queries:\n"
        "    row.delete()\n"
        "result = [q['sql'].split()[0] for q in queries.captured_queries]\n"
    )
    assert "SELECT" not in statements and statements.count("DELETE") == 1
