"""``rt.trigger(..., on_commit=True)`` in a real Django app with a real sqlite database.

Django is configured in a child process (``settings.configure`` holds for a whole process,
and other tests configure Django their own way). The child runs an embedded Realtime on a
loop thread, listening on a free port, and its main thread plays a Django view: it writes
rows in transactions and publishes on commit. This test is the WebSocket subscriber, and
steps the child through its transactions over stdin/stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import pytest
from pusher_helpers import TIMEOUT, SocketOpener

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from pathlib import Path

    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(Path(sys.argv[1]) / "db.sqlite3")}},
        INSTALLED_APPS=[],
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db import connection, transaction

    from tidings import Realtime
    from tidings.server.app import listen

    rt = Realtime(app_id="12345", key="app-key", secret="app-secret", port=0,
                  shutdown_ready_delay=0, max_event_payload_bytes=100)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start():
        await rt.start()
        return (await listen(rt)).port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    def say(line):
        print(line, flush=True)

    def wait_for(word):
        line = sys.stdin.readline().strip()
        assert line == word, line

    def rows():
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM orders ORDER BY id")
            return [name for (name,) in cursor.fetchall()]

    class Rollback(Exception):
        pass

    def order(name, on_commit=True):
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders (name) VALUES (%s)", [name])
        return rt.trigger("orders", "created", {"name": name}, on_commit=on_commit)

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT)")
    say(f"port {port}")
    wait_for("subscribed")

    # 1. Published only once the transaction commits.
    with transaction.atomic():
        assert order("committed") is None
        say("in transaction")
        wait_for("continue")

    # 2. Never published when it rolls back.
    try:
        with transaction.atomic():
            order("rolled back")
            raise Rollback
    except Rollback:
        pass

    # 3. A savepoint rolled back inside a transaction that commits.
    with transaction.atomic():
        order("outer")
        try:
            with transaction.atomic():
                order("inner rolled back")
                raise Rollback
        except Rollback:
            pass

    # 4. A refused publish (too large) neither breaks the commit nor the next callback.
    with transaction.atomic():
        rt.trigger("orders", "created", {"name": "x" * 200}, on_commit=True)
        order("after a refused one")

    # 5. Outside a transaction (autocommit): published at once.
    order("autocommit")
    say("rows " + ",".join(rows()))
    rt.trigger("orders", "done", "")
    wait_for("stop")
    rt.close()
    say("stopped")
    """
)


async def test_published_after_commit_never_after_rollback(
    tmp_path: Path, open_socket: SocketOpener
) -> None:
    script = tmp_path / "django_child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr

    async def line() -> str:
        async with asyncio.timeout(6 * TIMEOUT):
            text = (await stdout.readline()).decode().strip()
        if not text:
            error = (await stderr.read()).decode()
            raise AssertionError(f"the Django process ended: {error}")
        return text

    async def tell(word: str) -> None:
        stdin.write(f"{word}\n".encode())
        await stdin.drain()

    try:
        port = int((await line()).removeprefix("port "))
        client = await open_socket(f"ws://127.0.0.1:{port}")
        await client.subscribe("orders")
        await tell("subscribed")
        assert await line() == "in transaction"
        await client.assert_silent()  # the row is written, the transaction still open
        await tell("continue")

        published = []
        while (message := await client.recv())["event"] != "done":
            assert message["event"] == "created", message
            published.append(json.loads(message["data"])["name"])
        assert published == ["committed", "outer", "after a refused one", "autocommit"]
        assert await line() == "rows committed,outer,after a refused one,autocommit"
        await tell("stop")
        assert await line() == "stopped"
        async with asyncio.timeout(TIMEOUT):
            assert await child.wait() == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
