"""Live models, the ORM-neutral part: what a live model declares, its channels, the events a
transaction's changes become, and how they are published on commit.

An ORM shell (:mod:`tidings.live.django`, :mod:`tidings.live.sqlalchemy`) turns each save
and delete into a :class:`Change` holding the declared fields as loaded and as saved (no
query: the shell captured them when the row was loaded), records it in a
:class:`ChangeBuffer`, and on commit hands ``buffer.commit()`` to :meth:`Publisher.publish`.

- Changes to one row in one transaction fold into one publication per channel: created then
  updated is one ``created`` with the final values, created then deleted is nothing.
- A payload is serialized once per row and action, and only when one of its channels is
  occupied; the broker is asked once per commit for all target channels.
- A payload over ``max_payload`` bytes goes out as ``{key, version, "stale": true}``.
- The sender (``X-Socket-ID`` of the request that made the change, in
  :data:`current_socket_id`) is excluded from every event of that change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tidings.backends import Event

log = logging.getLogger("tidings.live")

PREFIX = "private-live."
MAX_CHANNEL_NAME = 200
# Pusher channel-name text; a filter value also may not hold "." (the separator of the parts).
_VALUE = re.compile(r"\A[A-Za-z0-9_\-=@,;]+\Z")
_NAME = re.compile(r"\A[A-Za-z0-9_\-=@,;]+\Z")

current_socket_id: ContextVar[str | None] = ContextVar("tidings_live_socket_id", default=None)
"""The socket id of the connection that made the current request (``X-Socket-ID``), set by
the framework integrations; its events are not echoed to it (Pusher's ``socket_id``)."""

Action = Literal["created", "updated", "deleted"]
Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LiveSpec:
    """One ``@rt.live(model, ...)`` declaration; ``handler`` is the decorated class's instance
    (``authorize(user, **filters)``, ``snapshot(**filters)``)."""

    model: type
    fields: tuple[str, ...]
    filters: tuple[str, ...]
    key: str
    version: str
    name: str
    max_payload: int
    handler: Any

    @classmethod
    def declare(
        cls,
        model: type,
        handler: Any,
        *,
        fields: Sequence[str],
        filters: Sequence[str] = (),
        key: str = "id",
        version: str | None = "version",
        name: str | None = None,
        max_payload: int = 8_192,
    ) -> LiveSpec:
        """Check a declaration; a mistake raises ``ValueError`` at import, not at a save."""
        if isinstance(fields, str) or isinstance(filters, str):
            raise ValueError("fields and filters are lists of field names, not one str")
        if version is None:
            raise ValueError(
                "a live model needs a version field (an integer bumped on every save): every "
                "event carries it so clients can drop what they already know"
            )
        name = model.__name__.lower() if name is None else name
        if not _NAME.match(name):
            raise ValueError(f"live name {name!r}: only A-Z a-z 0-9 _ - = @ , ; may appear")
        declared = tuple(dict.fromkeys(fields))
        for needed in (key, version, *filters):
            if needed not in declared:
                raise ValueError(f"live {name}: {needed!r} must be one of the fields")
        for filter_name in filters:
            if not _NAME.match(filter_name):
                raise ValueError(f"live {name}: filter {filter_name!r} is not channel-name text")
        if max_payload < 64:
            raise ValueError(f"live {name}: max_payload must be at least 64 bytes")
        return cls(model, declared, tuple(filters), key, version, name, max_payload, handler)

    # -- channels ----------------------------------------------------------------------------

    def patterns(self) -> list[tuple[str, str | None]]:
        """``(authorize pattern, filter)`` pairs; the pattern's placeholder is ``{value}``."""
        if not self.filters:
            return [(f"{PREFIX}{self.name}", None)]
        return [(f"{PREFIX}{self.name}.{f}.{{value}}", f) for f in self.filters]

    def channels(self, values: Values) -> list[str]:
        """The channels a row with these values is published to; a value that cannot be in a
        channel name is skipped with a warning (never an exception into the app's save)."""
        if not self.filters:
            return [f"{PREFIX}{self.name}"]
        names = []
        for filter_name in self.filters:
            if filter_name not in values:
                continue
            value = values[filter_name]
            text = "" if value is None else str(value)
            channel = f"{PREFIX}{self.name}.{filter_name}.{text}"
            if value is None or not _VALUE.match(text) or len(channel) > MAX_CHANNEL_NAME:
                log.warning(
                    "live %s: row %r not published on filter %s: %r is not channel-name text "
                    "(A-Z a-z 0-9 _ - = @ , ;) or makes the name over %d characters",
                    self.name,
                    values.get(self.key),
                    filter_name,
                    value,
                    MAX_CHANNEL_NAME,
                )
                continue
            names.append(channel)
        return names

    def parse(self, channel: str) -> dict[str, str] | None:
        """The filter values of one of this model's channels (``{}`` without filters)."""
        if not self.filters:
            return {} if channel == f"{PREFIX}{self.name}" else None
        head = f"{PREFIX}{self.name}."
        if not channel.startswith(head):
            return None
        filter_name, dot, value = channel[len(head) :].partition(".")
        if not dot or filter_name not in self.filters or not _VALUE.match(value):
            return None
        return {filter_name: value}

    # -- rows ----------------------------------------------------------------------------

    def row(self, values: Values) -> dict[str, Any]:
        """The declared fields of ``values``, in declaration order."""
        return {name: values[name] for name in self.fields if name in values}

    def changed(self, old: Values, new: Values) -> dict[str, Any]:
        """Declared fields (other than key and version) whose value differs from ``old``."""
        return {
            name: new[name]
            for name in self.fields
            if name in new
            and name not in (self.key, self.version)
            and (name not in old or old[name] != new[name])
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One save or delete, as the ORM shell saw it. ``old``: the declared fields as loaded
    (None: a new row, or one ``live_touch`` re-read with no ``old=``); ``new``: as saved
    (None: deleted). ``socket_id``: the request's ``X-Socket-ID`` when the change was made."""

    spec: LiveSpec
    key: Any
    old: Values | None
    new: Values | None
    socket_id: str | None = None

    @classmethod
    def saved(cls, spec: LiveSpec, old: Values | None, new: Values) -> Change:
        return cls(spec, new[spec.key], old, dict(new), current_socket_id.get())

    @classmethod
    def deleted(cls, spec: LiveSpec, old: Values) -> Change:
        return cls(spec, old[spec.key], dict(old), None, current_socket_id.get())


def compared(spec: LiveSpec, before: Iterable[Values], after: Iterable[Values]) -> list[Change]:
    """The changes that turn rows as they were into rows as they are (the declared fields of
    each, matched by key): a row in both is saved (a filter move is deleted + created), a
    row only after is created, a row only before is deleted.

    What a bulk write (``QuerySet.update()``, raw SQL) needs: the rows read before it and
    after it, as ``rt.live_changes`` does. A row that changed with the same version is
    logged: clients drop an event that is not newer than what they know."""
    old = {row[spec.key]: row for row in before}
    changes: list[Change] = []
    for row in after:
        was = old.pop(row[spec.key], None)
        if was is not None and was.get(spec.version) == row.get(spec.version):
            if spec.changed(was, row) or spec.channels(was) != spec.channels(row):
                log.warning(
                    "live %s: row %r changed without a version bump: clients drop its "
                    "events as not newer (bump the version in the bulk write itself)",
                    spec.name,
                    row[spec.key],
                )
        changes.append(Change.saved(spec, was, row))
    changes.extend(Change.deleted(spec, row) for row in old.values())
    return changes


@dataclass(slots=True)
class Publication:
    """One event of one row on some channels; the data is built (and serialized) only when
    :meth:`Publisher.publish` finds one of the channels occupied."""

    spec: LiveSpec
    action: Action
    key: Any
    version: Any
    channels: list[str]
    fields: dict[str, Any]
    socket_id: str | None = None

    def data(self) -> bytes:
        """The event's JSON; a stale marker when over the model's ``max_payload``."""
        spec = self.spec
        body = serialize({spec.key: self.key, spec.version: self.version, **self.fields})
        if len(body) > spec.max_payload:
            return serialize({spec.key: self.key, spec.version: self.version, "stale": True})
        return body


def serialize(data: Mapping[str, Any]) -> bytes:
    """JSON for an event or a snapshot row (dates as ISO text; Decimal and others via str)."""
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)


def fold(changes: Iterable[Change]) -> list[Publication]:
    """The publications of a transaction's changes, in the order their rows first changed.

    Several changes to one row fold into one: its values before the first change against
    its values after the last, so a client that knew the row before the transaction ends up
    equal to it after."""
    rows: dict[tuple[str, Any], tuple[Change, Change]] = {}
    for change in changes:
        row = (change.spec.name, change.key)
        first = rows[row][0] if row in rows else change
        rows[row] = (first, change)
    publications: list[Publication] = []
    for first, last in rows.values():
        publications.extend(_events(first.spec, first.old, last, last.socket_id))
    return publications


def _events(
    spec: LiveSpec, before: Values | None, last: Change, socket_id: str | None
) -> list[Publication]:
    after = last.new
    key = last.key
    if after is None:
        if before is None or last.old is None:
            return []  # created and deleted in one transaction: nobody saw it
        # The deleted row's version: as loaded at the delete, plus one.
        version = _next(last.old.get(spec.version))
        return _one(spec, "deleted", key, version, spec.channels(before), {}, socket_id)
    version = after.get(spec.version)
    row = spec.row(after)
    new_channels = spec.channels(after)
    if before is None:
        return _one(spec, "created", key, version, new_channels, row, socket_id)
    old_channels = spec.channels(before)
    kept = [c for c in new_channels if c in old_channels]
    gone = [c for c in old_channels if c not in new_channels]
    came = [c for c in new_channels if c not in old_channels]
    changed = spec.changed(before, after)
    publications: list[Publication] = []
    if changed:
        publications += _one(spec, "updated", key, version, kept, changed, socket_id)
    # A filter move: the old partition loses the row, the new one gains all of it.
    publications += _one(spec, "deleted", key, version, gone, {}, socket_id)
    publications += _one(spec, "created", key, version, came, row, socket_id)
    return publications


def _one(
    spec: LiveSpec,
    action: Action,
    key: Any,
    version: Any,
    channels: list[str],
    fields: dict[str, Any],
    socket_id: str | None,
) -> list[Publication]:
    if not channels:
        return []
    return [Publication(spec, action, key, version, channels, fields, socket_id)]


def _next(version: Any) -> Any:
    return version + 1 if isinstance(version, int) else version


@dataclass(slots=True)
class ChangeBuffer:
    """The changes of one transaction, with savepoint marks; ORM-neutral.

    ``savepoint()`` returns a mark, ``rollback_to(mark)`` drops what was recorded since it
    (a released savepoint needs nothing), ``commit()`` returns the publications and empties
    the buffer, ``rollback()`` empties it."""

    changes: list[Change] = field(default_factory=list)

    def record(self, change: Change) -> None:
        self.changes.append(change)

    def savepoint(self) -> int:
        return len(self.changes)

    def rollback_to(self, mark: int) -> None:
        del self.changes[mark:]

    def rollback(self) -> None:
        self.changes.clear()

    def commit(self) -> list[Publication]:
        changes, self.changes = self.changes, []
        return fold(changes)

    def __len__(self) -> int:
        return len(self.changes)


Occupied = Callable[[Sequence[str]], set[str]]
Send = Callable[[list[dict[str, Any]]], object]
BATCH = 10  # Pusher's limit of events per batch trigger


def targets(publications: Sequence[Publication]) -> list[str]:
    """Every channel the publications go to, once: what ``occupied`` is asked about."""
    return list(dict.fromkeys(c for p in publications for c in p.channels))


def events(publications: Sequence[Publication], occupied: set[str]) -> list[Event]:
    """One event per occupied channel of each publication, in order; a publication with
    no occupied channel is never serialized, one with several is serialized once."""
    found: list[Event] = []
    for publication in publications:
        channels = [c for c in publication.channels if c in occupied]
        if not channels:
            continue
        data = publication.data().decode()
        action, socket_id = publication.action, publication.socket_id
        found += [Event((channel,), action, data, socket_id) for channel in channels]
    return found


def batches(publications: Sequence[Publication], occupied: set[str]) -> list[list[dict[str, Any]]]:
    """:func:`events` as batch-trigger entries, at most :data:`BATCH` a batch."""
    entries: list[dict[str, Any]] = []
    for event in events(publications, occupied):
        entry: dict[str, Any] = {
            "channel": event.channels[0],
            "name": event.name,
            "data": event.data,
        }
        if event.socket_id is not None:
            entry["socket_id"] = event.socket_id
        entries.append(entry)
    return [entries[start : start + BATCH] for start in range(0, len(entries), BATCH)]


class Publisher:
    """Publishes a commit's publications from a thread: one ``occupied`` question for all
    their channels, serialization only for those with an occupied channel, batch triggers."""

    def __init__(self, occupied: Occupied, send: Send) -> None:
        self._occupied = occupied
        self._send = send

    def publish(self, publications: Sequence[Publication]) -> int:
        """Publish; returns how many events went out. Never raises: the commit has happened,
        and a failed publish is logged (clients heal on their next snapshot)."""
        if not publications:
            return 0
        try:
            sent = 0
            for batch in batches(publications, self._occupied(targets(publications))):
                self._send(batch)
                sent += len(batch)
            return sent
        except Exception:
            log.exception("live: publishing %d change(s) failed", len(publications))
            return 0
