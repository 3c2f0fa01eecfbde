"""A Django site for the snapshot race (test_live_race.py), run as a child process.

``python live_django_race_app.py CONFIG``: CONFIG is JSON with ``database`` (a
``DATABASES["default"]`` entry), ``lists`` and ``slow_snapshot`` (seconds). The table
``race_item`` is created and seeded, an embedded Realtime serves the live ``Item`` model on
a free port (printed as ``port N``), then each stdin line ``{"seed", "changes", "seconds"}``
commits a burst through the ORM and answers ``done N``; the end of stdin stops the site.

Django settings hold for a whole process, and other tests configure Django their own way:
hence a child process.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
from typing import Any

import django
from django.conf import settings

CONFIG = json.loads(sys.argv[1])
LISTS: int = CONFIG["lists"]
SLOW_SNAPSHOT: float = CONFIG["slow_snapshot"]

settings.configure(
    DEBUG=False,
    SECRET_KEY="tidings-test-only",
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    DATABASES={"default": CONFIG["database"]},
    USE_TZ=True,
    LOGGING_CONFIG=None,
)
django.setup()

from django.db import connection, models, transaction  # noqa: E402
from django.db.models import F  # noqa: E402

from tidings import Realtime  # noqa: E402
from tidings.server.app import listen  # noqa: E402


class Item(models.Model):
    title = models.CharField(max_length=200)
    list_id = models.IntegerField(db_index=True)
    version = models.IntegerField(default=0)

    class Meta:
        app_label = "race"
        db_table = "race_item"


rt = Realtime(app_id="12345", key="app-key", secret="app-secret", port=0, shutdown_ready_delay=0)


@rt.live(Item, fields=["id", "title", "list_id", "version"], filters=["list_id"])
class ItemLive:
    def authorize(self, user: Any, list_id: str) -> bool:
        return True

    def snapshot(self, list_id: str) -> list[Item]:
        # Slow, as a big snapshot is: changes commit before its query (the client gets them
        # twice) and after it (only as held events: without the hold they would be lost).
        time.sleep(random.uniform(0, SLOW_SNAPSHOT))
        rows = list(Item.objects.filter(list_id=int(list_id)))
        time.sleep(random.uniform(0, SLOW_SNAPSHOT))
        return rows


def burst(seed: int, changes: int, seconds: float) -> int:
    """``changes`` commits paced over ``seconds``: creates, deletes, moves by ``save()``,
    title edits, and bulk moves of three rows by ``QuerySet.update()`` in
    ``rt.live_changes`` (each row to another list: the old list's channel must hear it)."""
    rng = random.Random(seed)
    ids = list(Item.objects.values_list("pk", flat=True))
    started = time.monotonic()
    for n in range(changes):
        with transaction.atomic():
            roll = rng.random()
            if roll < 0.3 or len(ids) < 10:
                ids.append(Item.objects.create(title=f"new {n}", list_id=rng.randrange(LISTS)).pk)
            elif roll < 0.45:
                victim = rng.choice(ids)
                ids.remove(victim)
                Item.objects.get(pk=victim).delete()
            elif roll < 0.6:
                item = Item.objects.get(pk=rng.choice(ids))
                item.list_id = (item.list_id + rng.randrange(1, LISTS)) % LISTS
                item.save()
            elif roll < 0.75:
                moved = rng.sample(ids, 3)
                shift = rng.randrange(1, LISTS)
                with rt.live_changes(Item, moved):
                    Item.objects.filter(pk__in=moved).update(
                        list_id=(F("list_id") + shift) % LISTS, version=F("version") + 1
                    )
            else:
                item = Item.objects.get(pk=rng.choice(ids))
                item.title = f"edit {n}"
                item.save()
        pause = started + seconds * (n + 1) / changes - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return changes


def main() -> None:
    with connection.schema_editor() as editor:
        editor.create_model(Item)
    Item.objects.bulk_create(Item(title=f"seed {n}", list_id=n % LISTS) for n in range(40))

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> int:
        await rt.start()
        return (await listen(rt)).port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    print(f"port {port}", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        print(f"done {burst(command['seed'], command['changes'], command['seconds'])}", flush=True)
    asyncio.run_coroutine_threadsafe(rt.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
