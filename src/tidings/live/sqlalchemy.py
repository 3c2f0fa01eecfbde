"""Live models on SQLAlchemy 2.x: session events turn flushes into :class:`Change` records,
published when the transaction commits.

:func:`connect` (``rt.live_sqlalchemy(...)``) listens on a ``sessionmaker``, a
``scoped_session``, a ``Session`` class or instance, an ``async_sessionmaker``, or an
``AsyncSession`` class or instance (their sync session, which has the events):

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
:func:`register` gives the declared attributes active history, so setting one on an expired
row (after a commit with ``expire_on_commit=True``, or ``session.expire(row)``) refreshes
the row first: one SELECT, which the version bump would cost anyway; a loaded row costs
none. Should an old value still be missing (an attribute set around the instrumentation),
the field counts as changed, and a filter has an unknown old channel: the row goes out as
``created`` on its new channel only, with a warning.

Bulk statements bypass the unit of work and its flush events. ``do_orm_execute`` covers
ORM-enabled ``session.execute(update(Model).where(...).values(...))`` and
``delete(Model).where(...)`` on a live model: one SELECT (``FOR UPDATE`` where the database
has it) reads the declared fields of the rows the WHERE clause matches, before the
statement; after an UPDATE, one more reads them by key. The version is bumped in the same
UPDATE unless the statement sets it. Two queries per statement, whatever the number of
rows; a bulk UPDATE that moves rows between filters sends deleted + created like any save.
Bulk INSERTs (``insert(Model).values([...])``, ``session.execute(insert(Model), rows)``)
and UPDATEs by primary key (``session.execute(update(Model), rows)``) are not seen: after
one, call ``rt.live_touch(Model, ids)`` (:func:`touch`) in the same transaction, or run an
UPDATE that may move rows between filters in ``with rt.live_changes(Model, ids):``
(:func:`changes`), which reads the rows before and after it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Delete, Update, event, inspect, select
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    scoped_session,
    sessionmaker,
)

from tidings.live.model import Change, ChangeBuffer, LiveSpec, Publication, compared

if TYPE_CHECKING:
    from tidings.live.provider import Reader
    from tidings.realtime import Realtime

log = logging.getLogger("tidings.live")

# session.info keys: the root transaction's buffer, its savepoints' marks, and "commit"
# between an after_commit and the end of the transaction it fired for.
BUFFER = "tidings.live.buffer"
MARKS = "tidings.live.marks"
OUTCOME = "tidings.live.outcome"

Specs = Callable[[type], Sequence[LiveSpec]]
Publish = Callable[[list[Publication]], object]

# The sessions with a root transaction open in this context (thread, or asyncio task:
# SQLAlchemy runs an AsyncSession's sync work in a greenlet sharing the task's context), in
# the order they began, for rt.live_touch, which is given no session.
_open: ContextVar[tuple[Session, ...]] = ContextVar("tidings_live_sessions", default=())

_listened: weakref.WeakSet[Any] = weakref.WeakSet()  # what listen() connected


# -- the shell interface (tidings.live.orm.Shell) ---------------------------------------------


def connect(rt: Realtime, target: Any) -> Any:
    """``rt.live_sqlalchemy(target)``: publish the live rows that sessions of ``target``
    commit, through ``rt``."""
    return listen(target, rt.live_models.specs_for, rt.live_models.publish)


def reader(spec: LiveSpec) -> Reader:
    """The declared fields of a loaded instance (a snapshot row): attribute reads."""

    def read(row: Any) -> dict[str, Any]:
        return _values(row, spec)

    return read


def register(rt: Realtime, spec: LiveSpec) -> None:
    """Give the declared attributes active history (``rt.live_sqlalchemy(Session)``
    connects the sessions).

    Setting an expired attribute then loads the row first, so the value as loaded is in
    the history: a filter move after a commit (``expire_on_commit``) still reaches the old
    channel. It is the same one refresh that reading the version for the bump costs anyway;
    a loaded row costs nothing."""
    for name in spec.fields:
        attribute = getattr(spec.model, name)
        if not event.contains(attribute, "set", _keep_history):
            event.listen(attribute, "set", _keep_history, active_history=True)


def _keep_history(target: Any, value: Any, oldvalue: Any, initiator: Any) -> None:
    """A no-op ``set`` listener: registering it with ``active_history`` is what counts."""


def touch(
    rt: Realtime,
    specs: list[LiveSpec],
    ids: list[Any],
    deleted: bool,
    rows: list[Any] | None,
    old: list[Any] | None = None,
) -> None:
    """``rt.live_touch``: in the session whose transaction is open in this thread or task
    (the one that began last), see :func:`touch_session`."""
    touch_session(_current("live_touch"), specs, ids, deleted=deleted, rows=rows, old=old)


def changes(
    rt: Realtime, specs: list[LiveSpec], ids: list[Any], session: Session | None
) -> AbstractContextManager[None]:
    """``rt.live_changes``: :func:`changes_session` in ``session``, or in the session whose
    transaction is open in this thread or task (the one that began last)."""
    return changes_session(session or _current("live_changes"), specs, ids)


def _current(caller: str) -> Session:
    sessions = _open.get()
    if not sessions:
        raise RuntimeError(
            f"{caller} on an SQLAlchemy model needs a session of a factory given to "
            "rt.live_sqlalchemy() with its transaction open here (call it before commit)"
        )
    return sessions[-1]


def listen(target: Any, specs: Specs, publish: Publish) -> Any:
    """Publish the live rows that sessions of ``target`` commit. ``specs`` gives a mapped
    class's declarations (none: not live); ``publish`` gets a commit's publications.
    Returns what the events were attached to."""
    listened = event_target(target)
    if listened in _listened:
        return listened  # connected already: a second set of listeners would send twice
    _listened.add(listened)
    handlers = _Handlers(specs, publish)
    event.listen(listened, "before_flush", handlers.before_flush)
    event.listen(listened, "after_flush", handlers.after_flush)
    event.listen(listened, "after_transaction_create", handlers.after_transaction_create)
    event.listen(listened, "after_commit", handlers.after_commit)
    event.listen(listened, "after_transaction_end", handlers.after_transaction_end)
    event.listen(listened, "do_orm_execute", handlers.do_orm_execute)
    return listened


def event_target(target: Any) -> Any:
    """What ``target``'s sessions take their events from: a sessionmaker, a Session class
    (every session of it and of its subclasses) or one Session."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    if isinstance(target, scoped_session):
        return event_target(target.session_factory)
    if isinstance(target, sessionmaker | Session):
        return target
    if isinstance(target, type) and issubclass(target, Session):
        return target
    # An AsyncSession drives a sync Session, which has the events.
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, type) and issubclass(target, AsyncSession):
        return target.sync_session_class
    if isinstance(target, async_sessionmaker):
        # A sync class of this maker's own, so that other sessions are not connected too.
        base = target.kw.get("sync_session_class") or Session
        live_class = type(f"Live{base.__name__}", (base,), {})
        target.configure(sync_session_class=live_class)
        return live_class
    raise TypeError(
        "live_sqlalchemy() takes a sessionmaker, a scoped_session, a Session class or "
        f"instance, an async_sessionmaker, or an AsyncSession class or instance, not {target!r}"
    )


class _Handlers:
    def __init__(self, specs: Specs, publish: Publish) -> None:
        self._specs = specs
        self._publish = publish
        self._thread: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        for row in [*session.new, *session.dirty]:
            specs = self._specs(type(row))
            if not specs:
                continue
            state = inspect(row)
            if state.persistent and not session.is_modified(row, include_collections=False):
                continue
            for version in {spec.version for spec in specs}:
                if state.attrs[version].history.added:
                    continue  # the app set the version itself: it wins
                current = getattr(row, version)  # an expired row is refreshed here
                setattr(row, version, (current or 0) + 1)
        for row in session.deleted:
            # After the DELETE an expired attribute can no longer be loaded.
            unloaded = inspect(row).unloaded
            for spec in self._specs(type(row)):
                for name in (spec.key, spec.version, *spec.filters):
                    if name in unloaded:
                        getattr(row, name)

    def after_flush(self, session: Session, flush_context: Any) -> None:
        changes: list[Change] = []
        deleted = set(session.deleted)
        for row in session.new:
            for spec in self._specs(type(row)):
                changes.append(Change.saved(spec, None, _values(row, spec)))
        for row in session.dirty:
            if row not in deleted:
                for spec in self._specs(type(row)):
                    new = _values(row, spec)
                    changes.append(Change.saved(spec, _old(row, spec, new), new))
        for row in deleted:
            for spec in self._specs(type(row)):
                changes.append(Change.deleted(spec, _old(row, spec, _values(row, spec))))
        _record(session, changes)

    def do_orm_execute(self, state: ORMExecuteState) -> Any:
        if not (state.is_update or state.is_delete) or state.bind_mapper is None:
            return None
        model = state.bind_mapper.class_
        specs = self._specs(model)
        statement = state.statement
        if not specs or not isinstance(statement, Update | Delete):
            return None
        if statement.whereclause is None and state.parameters is not None:
            return None  # an UPDATE by primary key from a list of rows: see touch()
        session = state.session
        key = specs[0].key
        names = list(dict.fromkeys(name for spec in specs for name in spec.fields))
        columns = [getattr(model, name) for name in names]
        found = select(*columns).with_for_update()
        if statement.whereclause is not None:
            found = found.where(statement.whereclause)
        before = {row[key]: dict(row) for row in session.execute(found).mappings()}
        if isinstance(statement, Update):
            # ValuesBase has no public accessor for the SET clause: read its private dict.
            setting = {getattr(c, "key", c) for c in getattr(statement, "_values", None) or {}}
            for name in {spec.version for spec in specs}:
                version: Column[Any] = inspect(model).columns[name]
                if version.key not in setting:
                    statement = statement.values({version: version + 1})
        result = state.invoke_statement(statement=statement)
        if not before:
            return result
        changes: list[Change] = []
        if isinstance(statement, Delete):
            for old in before.values():
                changes += [Change.deleted(spec, spec.row(old)) for spec in specs]
        else:
            again = select(*columns).where(getattr(model, key).in_(list(before)))
            for row in session.execute(again).mappings():
                old = before[row[key]]
                new = dict(row)
                changes += [Change.saved(spec, spec.row(old), spec.row(new)) for spec in specs]
        _record(session, changes)
        return result

    def after_transaction_create(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            _open.set((*_open.get(), session))
        elif transaction.nested:
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
        if session in _open.get():
            _open.set(tuple(s for s in _open.get() if s is not session))
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


def touch_session(
    session: Session,
    specs: Sequence[LiveSpec],
    ids: Iterable[Any] = (),
    *,
    deleted: bool = False,
    rows: Iterable[Any] | None = None,
    old: Iterable[Any] | None = None,
) -> None:
    """Record rows changed where the session's events do not see them (a bulk INSERT, an
    UPDATE by primary key from a list, raw SQL); published when ``session``'s transaction
    commits, dropped if it rolls back.

    Saved rows are read again by ``ids`` in one query (or given as ``rows``). Without
    ``old`` each is sent as ``created`` (all fields; a client replaces a row it knows when
    the version is newer: such a statement sets the version itself). With ``old``, the
    rows as they were before the write (instances or mappings with at least the key, the
    version and the filters), each is compared with its old self: ``updated`` with the
    changed fields, a filter move as ``deleted`` on the old channel and ``created`` on the
    new. ``deleted=True``: before the DELETE, ``ids`` reads the rows; after it, ``rows``
    gives them as they were; each is sent as ``deleted`` with its version plus one."""
    if session.get_transaction() is None:
        raise RuntimeError("live touch: the session has no transaction to publish with")
    if deleted and old is not None:
        raise ValueError("live touch: old= compares saved rows; deleted=True takes rows=")
    names = _names(specs)
    stored = _read(session, specs, ids) if rows is None else _mappings(rows, names)
    changes: list[Change] = []
    if deleted:
        for values in stored:
            changes += [Change.deleted(spec, spec.row(values)) for spec in specs]
    else:
        before = [] if old is None else _mappings(old, names)
        for spec in specs:
            changes += compared(spec, _rows(spec, before), _rows(spec, stored))
    _record(session, changes)


@contextmanager
def changes_session(
    session: Session, specs: Sequence[LiveSpec], ids: Iterable[Any]
) -> Iterator[None]:
    """Record what the block does to the rows ``ids`` (an UPDATE by primary key from a list,
    raw SQL, a Core statement): they are read before it (``FOR UPDATE`` where the database
    has it, so no other transaction moves them meanwhile) and after it, two queries, and
    each is compared with its old self, as :func:`touch_session` with ``old`` does.

    A block that raises records nothing: its writes must roll back with it (a
    ``Session.begin()`` block does; a ``begin_nested()`` around it keeps the rest)."""
    wanted = list(ids)
    before = _read(session, specs, wanted, lock=True)
    yield
    after = _read(session, specs, wanted)
    _record(
        session,
        [c for spec in specs for c in compared(spec, _rows(spec, before), _rows(spec, after))],
    )


def _names(specs: Sequence[LiveSpec]) -> list[str]:
    return list(dict.fromkeys(name for spec in specs for name in spec.fields))


def _read(
    session: Session, specs: Sequence[LiveSpec], ids: Iterable[Any], lock: bool = False
) -> list[Mapping[str, Any]]:
    """The declared fields of the rows ``ids``, in one query (by key: their events go out in
    that order)."""
    model = specs[0].model
    key = getattr(model, specs[0].key)
    query = select(*[getattr(model, name) for name in _names(specs)])
    query = query.where(key.in_(list(ids))).order_by(key)
    if lock:
        query = query.with_for_update()
    return [dict(row) for row in session.execute(query).mappings()]


def _mappings(rows: Iterable[Any], names: list[str]) -> list[Mapping[str, Any]]:
    """Rows given by the app: mappings as they are, instances by attribute."""
    return [
        row if isinstance(row, Mapping) else {name: getattr(row, name) for name in names}
        for row in rows
    ]


def _rows(spec: LiveSpec, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [spec.row(values) for values in rows]


def _record(session: Session, changes: list[Change]) -> None:
    if changes:
        buffer: ChangeBuffer = session.info.setdefault(BUFFER, ChangeBuffer())
        for change in changes:
            buffer.record(change)
