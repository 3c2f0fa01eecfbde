"""How a Realtime publishes its live models' commits: queued by the saving threads, drained
on its loop in commit order, several commits in one go when they queue up.

ORM-neutral: the commits are built with the live layer's own types (what the Django and
SQLAlchemy shells hand over), published to a real socket of an embedded Realtime.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from embedded_node import embedded_realtime, serving
from pusher_helpers import SocketOpener

from tidings.backends import Event
from tidings.live import LiveSpec
from tidings.live.model import Change, ChangeBuffer, Publication

CHANNEL = "private-live.row.list_id.1"


@dataclass
class Row:
    id: int
    title: str
    list_id: int
    version: int


class Rows:
    def authorize(self, user: object, list_id: str) -> bool:
        return True

    def snapshot(self, list_id: str) -> list[Row]:
        return []


def commit(spec: LiveSpec, row_id: int) -> list[Publication]:
    """One transaction that created row ``row_id`` on list 1."""
    buffer = ChangeBuffer()
    values = {"id": row_id, "title": f"row {row_id}", "list_id": 1, "version": 1}
    buffer.record(Change.saved(spec, None, values))
    return buffer.commit()


async def test_commits_queued_behind_a_busy_loop_go_out_together_in_commit_order(
    open_socket: SocketOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = embedded_realtime()
    spec = LiveSpec.declare(
        Row, Rows(), fields=["id", "title", "list_id", "version"], filters=["list_id"]
    )
    rt.live_models.add(spec)
    for pattern, _ in spec.patterns():
        rt.authorize(pattern)(lambda user, value: True)
    asked: list[list[str]] = []
    sent: list[list[Event]] = []
    occupied, trigger_many = rt.aoccupied, rt._atrigger_many

    async def watch_occupied(channels: Sequence[str]) -> set[str]:
        asked.append(list(channels))
        return await occupied(channels)

    async def watch_trigger_many(events: Sequence[Event]) -> None:
        sent.append(list(events))
        await trigger_many(events)

    monkeypatch.setattr(rt, "aoccupied", watch_occupied)
    monkeypatch.setattr(rt, "_atrigger_many", watch_trigger_many)
    async with serving(rt) as ws_url:
        sock = await open_socket(ws_url)
        await sock.subscribe_private(CHANNEL)
        await sock.expect("tidings:snapshot", CHANNEL)

        # Five commits from a saving thread while the loop is busy (blocked on the join):
        # they queue up behind one wake-up of the loop.
        def save_five() -> None:
            for row_id in range(1, 6):
                rt.live_models.publish(commit(spec, row_id))

        saver = threading.Thread(target=save_five)
        saver.start()
        saver.join()
        await rt.live_models.flush()

        assert asked == [[CHANNEL]]  # one question for the five
        assert [[json.loads(e.data)["id"] for e in events] for events in sent] == [[1, 2, 3, 4, 5]]
        received: list[Any] = []
        for _ in range(5):
            message = await sock.expect("created", CHANNEL)
            received.append(json.loads(message["data"])["id"])
        assert received == [1, 2, 3, 4, 5]


async def test_a_commit_after_the_queue_drained_is_published_too(open_socket: SocketOpener) -> None:
    rt = embedded_realtime()
    spec = LiveSpec.declare(
        Row, Rows(), fields=["id", "title", "list_id", "version"], filters=["list_id"]
    )
    rt.live_models.add(spec)
    for pattern, _ in spec.patterns():
        rt.authorize(pattern)(lambda user, value: True)
    async with serving(rt) as ws_url:
        sock = await open_socket(ws_url)
        await sock.subscribe_private(CHANNEL)
        await sock.expect("tidings:snapshot", CHANNEL)
        for row_id in (1, 2, 3):  # one at a time: each finds the previous drain finished
            rt.live_models.publish(commit(spec, row_id))
            await rt.live_models.flush()
            message = await sock.expect("created", CHANNEL)
            assert json.loads(message["data"])["id"] == row_id
