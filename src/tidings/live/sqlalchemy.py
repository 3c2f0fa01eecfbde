"""Live models on SQLAlchemy 2.x: session events turn flushes into :class:`Change` records,
published when the transaction commits.

:func:`connect` listens on a ``Session`` class, a ``sessionmaker``, a ``scoped_session``, or
an ``AsyncSession`` class or ``async_sessionmaker`` (their sync session, which has the
events):

- ``before_flush``: every new or modified live row gets its version bumped by one, unless
  the app set the version itself since the row was loaded.
- ``after_flush``: new, modified and deleted live rows become changes in the buffer of the
  root transaction. Their values as loaded come from attribute history, which SQLAlchemy
  keeps until the flush is over: no query.
- ``begin_nested()``: the savepoint marks the buffer when it begins; rolled back, it drops
  what was recorded since (its own changes only); released, it keeps them.
- the end of the root transaction: committed (``after_commit`` fired for it), the buffer is
  published; otherwise (rollback, close, a failed commit) it is dropped.

A sync session publishes in the thread that committed, before ``commit()`` returns. An
``AsyncSession`` runs these events on the event loop's thread, where blocking would stall
the loop (and, embedded, wait on itself): its commits are published by one worker thread of
their own, in commit order, just after ``await session.commit()`` returns.

Attribute history knows an old value only if the attribute was loaded when the app set it.
One set while expired (after a commit with ``expire_on_commit=True``, or after
``session.expire(row)``) has no old value: it counts as changed, and a filter set that way
has an unknown old channel, so the row goes out as ``created`` on its new channel only,
with a warning. Reading the version of an expired row (for the bump) refreshes it: one
SELECT, the one SQLAlchemy issues for any read of that row.

Bulk statements bypass the unit of work and its flush events. ``do_orm_execute`` covers
ORM-enabled ``session.execute(update(Model).where(...).values(...))`` and
``delete(Model).where(...)`` on a live model: one SELECT (``FOR UPDATE`` where the database
has it) reads the declared fields of the rows the WHERE clause matches, before the
statement; after an UPDATE, one more reads them by key. The version is bumped in the same
UPDATE unless the statement sets it. Two queries per statement, whatever the number of
rows; a bulk UPDATE that moves rows between filters sends deleted + created like any save.
Bulk INSERTs (``insert(Model).values([...])``, ``session.execute(insert(Model), rows)``)
and UPDATEs by primary key (``session.execute(update(Model), rows)``) are not seen: after
one, call :func:`touch` with the rows' ids.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Column, Delete, Update, event, inspect, select
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    scoped_session,
    sessionmaker,
)

from tidings.live.model import Change, ChangeBuffer, LiveSpec, Publication

log = logging.getLogger("tidings.live")

# session.info keys: the root transaction's buffer, its savepoints' marks, and "commit"
# between an after_commit and the end of the transaction it fired for.
BUFFER = "tidings.live.buffer"
MARKS = "tidings.live.marks"
OUTCOME = "tidings.live.outcome"

Specs = Callable[[type], LiveSpec | None]
Publish = Callable[[list[Publication]], object]


def connect(target: Any, specs: Specs, publish: Publish) -> Any:
    """Publish the live rows that sessions of ``target`` commit. ``specs`` finds a mapped
    class's declaration (None: not live); ``publish`` gets a commit's publications. Returns
    what the events were attached to."""
    listened = event_target(target)
    handlers = _Handlers(specs, publish)
    event.listen(listened, "before_flush", handlers.before_flush)
    event.listen(listened, "after_flush", handlers.after_flush)
    event.listen(listened, "after_transaction_create", handlers.after_transaction_create)
    event.listen(listened, "after_commit", handlers.after_commit)
    event.listen(listened, "after_transaction_end", handlers.after_transaction_end)
    event.listen(listened, "do_orm_execute", handlers.do_orm_execute)
    return listened


def event_target(target: Any) -> Any:
    """The sessionmaker or Session class that ``target``'s sessions take their events from."""
    if isinstance(target, scoped_session):
        return event_target(target.session_factory)
    if isinstance(target, sessionmaker):
        return target
    if isinstance(target, type) and issubclass(target, Session):
        return target
    # AsyncSession and async_sessionmaker drive a sync Session, which has the events.
    sync_class = getattr(target, "sync_session_class", None)
    if isinstance(target, type) and isinstance(sync_class, type):
        return sync_class
    kw = getattr(target, "kw", None)
    if isinstance(kw, dict) and hasattr(target, "class_"):  # an async_sessionmaker
        return kw.get("sync_session_class") or Session
    raise TypeError(
        "live_sqlalchemy() takes a Session class, a sessionmaker, a scoped_session, an "
        f"AsyncSession class or an async_sessionmaker, not {target!r}"
    )


class _Handlers:
    def __init__(self, specs: Specs, publish: Publish) -> None:
        self._specs = specs
        self._publish = publish
        self._thread: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        for row in [*session.new, *session.dirty]:
            spec = self._specs(type(row))
            if spec is None:
                continue
            state = inspect(row)
            if state.persistent and not session.is_modified(row, include_collections=False):
                continue
            if state.attrs[spec.version].history.added:
                continue  # the app set the version itself: it wins
            current = getattr(row, spec.version)  # an expired row is refreshed here
            setattr(row, spec.version, (current or 0) + 1)
        for row in session.deleted:
            spec = self._specs(type(row))
            if spec is not None:
                # After the DELETE an expired attribute can no longer be loaded.
                unloaded = inspect(row).unloaded
                for name in (spec.key, spec.version, *spec.filters):
                    if name in unloaded:
                        getattr(row, name)

    def after_flush(self, session: Session, flush_context: Any) -> None:
        changes: list[Change] = []
        deleted = set(session.deleted)
        for row in session.new:
            spec = self._specs(type(row))
            if spec is not None:
                changes.append(Change.saved(spec, None, _values(row, spec)))
        for row in session.dirty:
            spec = self._specs(type(row))
            if spec is not None and row not in deleted:
                new = _values(row, spec)
                changes.append(Change.saved(spec, _old(row, spec, new), new))
        for row in deleted:
            spec = self._specs(type(row))
            if spec is not None:
                old = _old(row, spec, _values(row, spec))
                changes.append(Change.deleted(spec, old))
        if changes:
            buffer: ChangeBuffer = session.info.setdefault(BUFFER, ChangeBuffer())
            for change in changes:
                buffer.record(change)

    def do_orm_execute(self, state: ORMExecuteState) -> Any:
        if not (state.is_update or state.is_delete) or state.bind_mapper is None:
            return None
        spec = self._specs(state.bind_mapper.class_)
        statement = state.statement
        if spec is None or not isinstance(statement, Update | Delete):
            return None
        if statement.whereclause is None and state.parameters is not None:
            return None  # an UPDATE by primary key from a list of rows: see touch()
        model = spec.model
        session = state.session
        columns = [getattr(model, name) for name in spec.fields]
        found = select(*columns).with_for_update()
        if statement.whereclause is not None:
            found = found.where(statement.whereclause)
        before = {row[spec.key]: dict(row) for row in session.execute(found).mappings()}
        if isinstance(statement, Update):
            version: Column[Any] = inspect(model).columns[spec.version]
            # ValuesBase has no public accessor for the SET clause: read its private dict.
            setting = getattr(statement, "_values", None) or {}
            if not any(getattr(c, "key", c) == version.key for c in setting):
                statement = statement.values({version: version + 1})
        result = state.invoke_statement(statement=statement)
        if not before:
            return result
        if isinstance(statement, Delete):
            changes = [Change.deleted(spec, old) for old in before.values()]
        else:
            again = select(*columns).where(getattr(model, spec.key).in_(list(before)))
            after = session.execute(again).mappings()
            changes = [Change.saved(spec, before[row[spec.key]], dict(row)) for row in after]
        _record(session, changes)
        return result

    def after_transaction_create(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.nested:
            buffer: ChangeBuffer = session.info.setdefault(BUFFER, ChangeBuffer())
            session.info.setdefault(MARKS, {})[transaction] = buffer.savepoint()

    def after_commit(self, session: Session) -> None:
        # Fires for a released savepoint too: the transaction that ends next is the one.
        session.info[OUTCOME] = "commit"

    def after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None and not transaction.nested:
            return  # a flush's subtransaction: its changes belong to the transaction around it
        committed = session.info.pop(OUTCOME, None) == "commit"
        if transaction.nested:
            mark = session.info.get(MARKS, {}).pop(transaction, None)
            buffer: ChangeBuffer | None = session.info.get(BUFFER)
            if not committed and mark is not None and buffer is not None:
                buffer.rollback_to(mark)
            return
        buffer = session.info.pop(BUFFER, None)
        session.info.pop(MARKS, None)
        if not committed or not buffer:
            return
        # The publisher logs its own failures: the commit is done and must not raise.
        publications = buffer.commit()
        if _on_event_loop():
            self._publisher_thread().submit(self._publish, publications)
        else:
            self._publish(publications)

    def _publisher_thread(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._thread is None:
                # One worker: commits are published in the order they happened.
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-live")
            return self._thread


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _values(row: Any, spec: LiveSpec) -> dict[str, Any]:
    return {name: getattr(row, name) for name in spec.fields}


def _old(row: Any, spec: LiveSpec, new: Mapping[str, Any]) -> dict[str, Any]:
    """The declared fields as loaded, from attribute history. A field set while expired has
    no old value and is left out (the model layer counts it as changed)."""
    state = inspect(row)
    old: dict[str, Any] = {}
    for name in spec.fields:
        history = state.attrs[name].history
        if history.deleted:
            old[name] = history.deleted[0]
        elif history.unchanged:
            old[name] = history.unchanged[0]
        elif not history.added:
            old[name] = new[name]  # neither loaded nor set before the flush: unchanged
        elif name in spec.filters:
            log.warning(
                "live %s: row %r: filter %s was set while expired, so its old channel is "
                "unknown; the row goes out as created on its new channel only (load the row "
                "before changing it to move it cleanly)",
                spec.name,
                new[spec.key],
                name,
            )
    return old


def touch(
    session: Session,
    spec: LiveSpec,
    ids: Iterable[Any] = (),
    *,
    deleted: Collection[Mapping[str, Any]] = (),
) -> None:
    """Record rows that a bulk statement changed; they are published when ``session``'s
    transaction commits and dropped if it rolls back.

    ``ids``: inserted or updated rows, read again in one query and sent as ``created`` (all
    fields; a client replaces a row it knows when the version is newer, so a bulk UPDATE
    must bump the version itself: ``values(version=Todo.version + 1)``). ``deleted``: rows
    a bulk DELETE removed, each with the key, the version and the filters as they were
    before it; each is sent as ``deleted`` with that version plus one."""
    changes = [Change.deleted(spec, row) for row in deleted]
    wanted = list(ids)
    if wanted:
        model = spec.model
        columns = [getattr(model, name) for name in spec.fields]
        query = select(*columns).where(getattr(model, spec.key).in_(wanted))
        changes += [
            Change.saved(spec, None, dict(row)) for row in session.execute(query).mappings()
        ]
    if changes and session.get_transaction() is None:
        raise RuntimeError("live touch: the session has no transaction to publish with")
    _record(session, changes)


def _record(session: Session, changes: list[Change]) -> None:
    if changes:
        buffer: ChangeBuffer = session.info.setdefault(BUFFER, ChangeBuffer())
        for change in changes:
            buffer.record(change)


def specs_of(declared: Sequence[LiveSpec]) -> Specs:
    """A ``specs`` lookup over some declarations (subclasses of a live model are live too)."""
    by_model = {spec.model: spec for spec in declared}

    def find(model: type) -> LiveSpec | None:
        for klass in model.__mro__:
            spec = by_model.get(klass)
            if spec is not None:
                return spec
        return None

    return find
