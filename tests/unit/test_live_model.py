"""tidings.live.model with fake changes: channels, folding, savepoints, the payload limit,
occupied checks and the sender's exclusion (no ORM, no network)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from tidings.live import model
from tidings.live.model import Change, ChangeBuffer, LiveSpec, Publisher, current_socket_id


class Todo:
    pass


def spec(**options: Any) -> LiveSpec:
    declared: dict[str, Any] = {
        "fields": ["id", "title", "done", "list_id", "version"],
        "filters": ["list_id"],
    }
    return LiveSpec.declare(Todo, object(), **{**declared, **options})


def row(id: int = 1, title: str = "milk", done: bool = False, list_id: Any = 5, version: int = 1):
    return {"id": id, "title": title, "done": done, "list_id": list_id, "version": version}


def events(changes: list[Change], occupied: set[str] | None = None) -> list[tuple[str, str, Any]]:
    """What a publisher sends for these changes: (channel, event, data) triples."""
    sent: list[dict[str, Any]] = []
    buffer = ChangeBuffer()
    for change in changes:
        buffer.record(change)

    def is_occupied(channels: Sequence[str]) -> set[str]:
        return set(channels) if occupied is None else occupied & set(channels)

    Publisher(is_occupied, sent.extend).publish(buffer.commit())
    return [(e["channel"], e["name"], json.loads(e["data"])) for e in sent]


LIST5 = "private-live.todo.list_id.5"
LIST6 = "private-live.todo.list_id.6"


def test_declaration_defaults_and_refusals() -> None:
    declared = spec()
    assert declared.name == "todo" and declared.key == "id" and declared.version == "version"
    assert declared.patterns() == [("private-live.todo.list_id.{value}", "list_id")]
    assert spec(filters=[]).patterns() == [("private-live.todo", None)]
    with pytest.raises(ValueError, match="version field"):
        spec(version=None)
    with pytest.raises(ValueError, match="'owner' must be one of the fields"):
        spec(filters=["owner"])
    with pytest.raises(ValueError, match="live name"):
        spec(name="to do")


def test_channels_and_parse() -> None:
    declared = spec()
    assert declared.channels(row()) == [LIST5]
    assert declared.parse(LIST5) == {"list_id": "5"}
    assert declared.parse("private-live.todo.title.5") is None
    assert declared.parse("private-live.other.list_id.5") is None
    assert spec(filters=[]).parse("private-live.todo") == {}


def test_a_value_that_is_not_channel_text_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "tidings.live"):
        assert spec().channels(row(list_id="a b")) == []
        assert spec().channels(row(list_id="x" * 200)) == []
        assert spec().channels(row(list_id=None)) == []
    assert len(caplog.records) == 3
    assert events([Change.saved(spec(), None, row(list_id="a.b"))]) == []


def test_created_updated_deleted() -> None:
    declared = spec()
    created = events([Change.saved(declared, None, row())])
    assert created == [(LIST5, "created", row())]
    updated = events([Change.saved(declared, row(), row(done=True, version=2))])
    assert updated == [(LIST5, "updated", {"id": 1, "version": 2, "done": True})]
    deleted = events([Change.deleted(declared, row(version=2))])
    assert deleted == [(LIST5, "deleted", {"id": 1, "version": 3})]


def test_an_update_of_no_declared_field_sends_nothing() -> None:
    assert events([Change.saved(spec(), row(), row(version=2))]) == []


def test_a_filter_move_is_deleted_on_the_old_channel_and_created_on_the_new() -> None:
    moved = events([Change.saved(spec(), row(), row(list_id=6, version=2))])
    assert moved == [
        (LIST5, "deleted", {"id": 1, "version": 2}),
        (LIST6, "created", row(list_id=6, version=2)),
    ]


def test_rows_before_and_after_a_bulk_write_compare_into_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    declared = spec()
    before = [row(1), row(2), row(3), row(4)]
    after = [
        row(1, list_id=6, version=2),  # moved
        row(2, done=True, version=2),  # changed in place
        row(3),  # untouched
        row(5, title="new"),  # made by the write
    ]  # row 4: deleted by it
    with caplog.at_level(logging.WARNING, logger="tidings.live"):
        changes = model.compared(declared, before, after)
    assert events(changes) == [
        (LIST5, "deleted", {"id": 1, "version": 2}),
        (LIST6, "created", row(1, list_id=6, version=2)),
        (LIST5, "updated", {"id": 2, "version": 2, "done": True}),
        (LIST5, "created", row(5, title="new")),
        (LIST5, "deleted", {"id": 4, "version": 2}),
    ]
    assert not caplog.records
    # A write that forgot the version: its events would be dropped as not newer.
    with caplog.at_level(logging.WARNING, logger="tidings.live"):
        model.compared(declared, [row(1)], [row(1, list_id=6)])
    assert ["without a version bump" in r.getMessage() for r in caplog.records] == [True]


def test_changes_to_one_row_fold_into_one_publication() -> None:
    declared = spec()
    first = row(version=1)
    second = row(title="oat milk", version=2)
    third = row(title="oat milk", done=True, version=3)
    assert events([Change.saved(declared, None, first), Change.saved(declared, first, second)]) == [
        (LIST5, "created", second)
    ]
    assert events(
        [Change.saved(declared, first, second), Change.saved(declared, second, third)]
    ) == [(LIST5, "updated", {"id": 1, "version": 3, "title": "oat milk", "done": True})]
    assert events([Change.saved(declared, None, first), Change.deleted(declared, first)]) == []
    # Moved to 6, then deleted there: the clients of list 5 only knew it at 5.
    moved = row(list_id=6, version=2)
    assert events([Change.saved(declared, first, moved), Change.deleted(declared, moved)]) == [
        (LIST5, "deleted", {"id": 1, "version": 3})
    ]


def test_savepoint_rollback_drops_only_its_part() -> None:
    declared = spec()
    buffer = ChangeBuffer()
    buffer.record(Change.saved(declared, None, row(id=1)))
    mark = buffer.savepoint()
    buffer.record(Change.saved(declared, None, row(id=2)))
    buffer.rollback_to(mark)
    kept = buffer.savepoint()
    buffer.record(Change.saved(declared, None, row(id=3)))
    assert kept == 1 and len(buffer) == 2
    assert [p.key for p in buffer.commit()] == [1, 3]
    assert len(buffer) == 0
    buffer.record(Change.saved(declared, None, row(id=4)))
    buffer.rollback()
    assert buffer.commit() == []


def test_a_payload_over_the_limit_is_sent_stale() -> None:
    big = row(title="x" * 500)
    assert events([Change.saved(spec(max_payload=200), None, big)]) == [
        (LIST5, "created", {"id": 1, "version": 1, "stale": True})
    ]


def test_one_occupied_question_and_no_serialization_for_unoccupied_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serialized: list[object] = []
    asked: list[list[str]] = []
    original = model.serialize

    def counting(data: Any) -> bytes:
        serialized.append(data)
        return original(data)

    monkeypatch.setattr(model, "serialize", counting)
    declared = spec()
    buffer = ChangeBuffer()
    for key in range(20):
        buffer.record(Change.saved(declared, None, row(id=key, list_id=key % 2 + 5)))
    sent: list[dict[str, Any]] = []

    def occupied(channels: Sequence[str]) -> set[str]:
        asked.append(list(channels))
        return {LIST6}

    assert Publisher(occupied, sent.append).publish(buffer.commit()) == 10
    assert asked == [[LIST5, LIST6]]
    assert len(serialized) == 10  # only the rows of the occupied list
    assert len(sent) == 1 and len(sent[0]) == 10  # one batch of ten


def test_a_row_on_several_occupied_channels_is_serialized_once_per_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serialized: list[object] = []
    original = model.serialize

    def counting(data: Any) -> bytes:
        serialized.append(data)
        return original(data)

    monkeypatch.setattr(model, "serialize", counting)
    declared = spec(filters=["list_id", "done"])
    old = row(version=1)
    new = row(title="oat milk", done=True, version=2)
    sent = events([Change.saved(declared, None, old)])
    assert [channel for channel, _, _ in sent] == [LIST5, "private-live.todo.done.False"]
    assert len(serialized) == 1  # one created, two channels
    serialized.clear()
    sent = events([Change.saved(declared, old, new)])
    # Kept list: updated; done False -> True is a move: deleted + created. One each.
    assert [(channel, name) for channel, name, _ in sent] == [
        (LIST5, "updated"),
        ("private-live.todo.done.False", "deleted"),
        ("private-live.todo.done.True", "created"),
    ]
    assert len(serialized) == 3


def test_the_sender_is_excluded() -> None:
    token = current_socket_id.set("123.456")
    try:
        change = Change.saved(spec(), None, row())
    finally:
        current_socket_id.reset(token)
    sent: list[list[dict[str, Any]]] = []
    Publisher(set, sent.append).publish(ChangeBuffer([change]).commit())
    assert sent[0][0]["socket_id"] == "123.456"


def test_a_failed_publish_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(batch: list[dict[str, Any]]) -> None:
        raise RuntimeError("cluster down")

    publications = ChangeBuffer([Change.saved(spec(), None, row())]).commit()
    assert Publisher(set, refuse).publish(publications) == 0
    assert "publishing 1 change(s) failed" in caplog.text
