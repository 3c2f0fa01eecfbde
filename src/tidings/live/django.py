"""The Django shell of live models: signals in, :class:`tidings.live.model.Change` out.

- Old values without a query: the model's ``from_db`` (which builds every instance a query
  loads) is wrapped to keep the declared fields as loaded on the instance; ``post_save``
  compares against them, then keeps the saved values for the next save.
- A save whose savepoint or transaction rolls back leaves its values in the instance, as
  Django does; what the instance counts as loaded goes back to what it was before that save
  (:func:`_loaded`), so its next save is compared with the row as the database has it.
- ``pre_save`` bumps the version unless the app changed it in this save; a
  ``save(update_fields=[...])`` gets the version field added to its list.
- Changes are published when the transaction commits: each change is handed to
  ``transaction.on_commit``, so Django itself drops those of a savepoint that rolls back,
  and one flush callback, kept last in the connection's list, publishes the survivors
  together (one ``occupied`` question per commit). Outside a transaction (autocommit) a
  save publishes at once, as ``on_commit`` would.
- ``QuerySet.delete()`` sends ``post_delete`` for each row (Django loads them first, since a
  receiver is connected), so it publishes by itself; ``bulk_create`` and
  ``QuerySet.update()`` send no signal: :func:`touch` (``rt.live_touch``) covers them, and
  :func:`changes` (``rt.live_changes``) an update that may move rows between filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connections, router, transaction  # type: ignore[import-untyped]
from django.db.models import Model  # type: ignore[import-untyped]
from django.db.models.signals import post_delete, post_save, pre_save  # type: ignore[import-untyped]

from tidings.live.model import Change, ChangeBuffer, LiveSpec, compared, fold

if TYPE_CHECKING:
    from tidings.live.provider import Reader
    from tidings.realtime import Realtime

LOADED = "_tidings_live_loaded"  # the declared fields as loaded, by attname, on the instance
# The instance's saves in transactions not yet over: (their on-commit hook, its connection,
# LOADED before that save), newest last; see _loaded().
UNDO = "_tidings_live_undo"
HOOKS = "_tidings_live_hooks"  # the connection's pending changes, until its commit


@dataclass(slots=True)
class _Declared:
    rt: Realtime
    spec: LiveSpec
    attnames: dict[str, str]  # declared name -> Django attname ("list" -> "list_id")

    def values(self, stored: dict[str, Any]) -> dict[str, Any]:
        return {name: stored[a] for name, a in self.attnames.items() if a in stored}


@dataclass(slots=True)
class _LiveModel:
    """Every declaration of one model class, and the union of their fields."""

    declared: list[_Declared] = field(default_factory=list)
    attnames: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset()
    needed: frozenset[str] = frozenset()  # versions, keys and filters: never left deferred
    python: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # attname: to_python

    def stored(self, instance: Model) -> dict[str, Any]:
        """The declared fields as the instance holds them (a deferred one is absent: reading
        it would be a query)."""
        state = instance.__dict__
        return {a: state[a] for a in self.attnames if a in state}

    def saved(self, instance: Model) -> dict[str, Any]:
        """The declared fields as saved: a value the app assigned as text (``list_id =
        request.POST["list"]``) as the field's Python value, as a load would give it."""
        state = instance.__dict__
        return {a: self.python[a](state[a]) for a in self.attnames if a in state}


_models: dict[type, _LiveModel] = {}


def reader(spec: LiveSpec) -> Reader:
    attnames = _attnames(spec)

    def read(instance: Any) -> dict[str, Any]:
        return {name: getattr(instance, a) for name, a in attnames.items()}

    return read


def register(rt: Realtime, spec: LiveSpec) -> None:
    model: Any = spec.model
    live = _models.get(model)
    if live is None:
        live = _models[model] = _LiveModel()
        _wrap(model, live)
        uid = f"tidings-live-{model.__module__}.{model.__qualname__}"
        pre_save.connect(_bump(live), sender=model, weak=False, dispatch_uid=f"{uid}-pre")
        post_save.connect(_saved(live), sender=model, weak=False, dispatch_uid=f"{uid}-post")
        post_delete.connect(_deleted(live), sender=model, weak=False, dispatch_uid=f"{uid}-del")
    declared = _Declared(rt, spec, _attnames(spec))
    live.declared.append(declared)
    live.attnames = live.attnames | set(declared.attnames.values())
    for name, attname in declared.attnames.items():
        live.python[attname] = model._meta.get_field(name).to_python
    live.versions = live.versions | {declared.attnames[spec.version]}
    needed = (spec.key, spec.version, *spec.filters)
    live.needed = live.needed | {declared.attnames[name] for name in needed}


def touch(
    rt: Realtime,
    specs: list[LiveSpec],
    ids: list[Any],
    deleted: bool,
    rows: list[Any] | None,
    old: list[Any] | None = None,
) -> None:
    """``rt.live_touch``: the rows (re-read in one query, or given) recorded as saved, or as
    deleted, in the current transaction of the model's write database; with ``old`` (the
    rows as read before the write), each compared with its old self."""
    model: Any = specs[0].model
    using = router.db_for_write(model)
    declared = _declare_all(rt, specs)
    if rows is None:
        stored = _read(model, using, ids, declared)
    else:
        stored = [_row(row, declared) for row in rows]
    if deleted:
        for values in stored:
            for one in declared:
                _record(one.rt, Change.deleted(one.spec, one.values(values)), using)
        return
    before = [] if old is None else [_row(row, declared) for row in old]
    _record_compared(declared, before, stored, using)


@contextmanager
def changes(rt: Realtime, specs: list[LiveSpec], ids: list[Any], session: Any) -> Iterator[None]:
    """``rt.live_changes``: the rows read before the block (``SELECT ... FOR UPDATE``, so no
    other transaction moves them meanwhile) and after it, each compared with its old self.

    The block runs in ``transaction.atomic(savepoint=False)``: outside a transaction it is
    one; inside one, an exception leaving the block dooms the whole transaction, as
    Django's own nested ``atomic`` without a savepoint does. Either way, nothing of a block
    that raised is published."""
    if session is not None:
        raise TypeError("live_changes(session=...) is for SQLAlchemy models, not Django's")
    model: Any = specs[0].model
    using = router.db_for_write(model)
    declared = _declare_all(rt, specs)
    with transaction.atomic(using=using, savepoint=False):
        before = _read(model, using, ids, declared, lock=True)
        yield
        _record_compared(declared, before, _read(model, using, ids, declared), using)


def _declare_all(rt: Realtime, specs: list[LiveSpec]) -> list[_Declared]:
    return [_Declared(rt, spec, _attnames(spec)) for spec in specs]


def _read(
    model: Any, using: str, ids: list[Any], declared: list[_Declared], lock: bool = False
) -> list[dict[str, Any]]:
    """The declared fields of the rows ``ids``, by attname, in one query (by key: their
    events go out in that order)."""
    attnames = sorted({a for d in declared for a in d.attnames.values()})
    rows = model._base_manager.using(using).filter(pk__in=ids).order_by("pk")
    if lock:
        rows = rows.select_for_update()  # ignored where the database has no FOR UPDATE
    return [dict(row) for row in rows.values(*attnames)]


def _record_compared(
    declared: list[_Declared],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    using: str,
) -> None:
    for one in declared:
        old = [one.values(values) for values in before]
        for change in compared(one.spec, old, [one.values(values) for values in after]):
            _record(one.rt, change, using)


# -- capturing values as loaded -------------------------------------------------------------


def _wrap(model: Any, live: _LiveModel) -> None:
    """Keep the declared fields as loaded: on ``from_db`` (every query-built instance) and
    after ``refresh_from_db``; ``save(update_fields=...)`` also saves the version."""
    from_db = model.from_db.__func__
    refresh = model.refresh_from_db
    save = model.save

    def loaded(cls: type, db: str, field_names: Any, values: Any) -> Any:
        instance = from_db(cls, db, field_names, values)
        instance.__dict__[LOADED] = live.stored(instance)
        return instance

    def refresh_from_db(self: Model, *args: Any, **kwargs: Any) -> None:
        refresh(self, *args, **kwargs)
        # Only the fields read now are as loaded: a deferred field loaded on access must
        # not make the unsaved changes of the others look loaded too.
        fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
        refreshed = live.stored(self)
        if fields is not None:
            names = {self._meta.get_field(name).attname for name in fields}
            refreshed = {a: v for a, v in refreshed.items() if a in names}
        state = self.__dict__
        state[LOADED] = {**(_loaded(self) or {}), **refreshed}

    def save_with_version(self: Model, *args: Any, **kwargs: Any) -> None:
        missing = live.needed - self.__dict__.keys()
        if missing and not self._state.adding:
            # Deferred (.only()/.defer()) versions or filters: the event needs them. One
            # query loads them; Django then saves the version with the loaded fields.
            self.refresh_from_db(fields=sorted(missing))
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and not _includes_version(update_fields, live):
            kwargs["update_fields"] = [*update_fields, *live.versions]
        save(self, *args, **kwargs)

    model.from_db = classmethod(loaded)
    model.refresh_from_db = refresh_from_db
    model.save = save_with_version


def _includes_version(update_fields: Any, live: _LiveModel) -> bool:
    names = set(update_fields)
    return not names or live.versions <= names


def _attnames(spec: LiveSpec) -> dict[str, str]:
    options = spec.model._meta  # type: ignore[attr-defined]
    names = {}
    for name in spec.fields:
        try:
            names[name] = options.get_field(name).attname
        except Exception:
            raise ValueError(
                f"live {spec.name}: {spec.model.__name__} has no field {name!r}"
            ) from None
    return names


def _row(row: Any, declared: list[_Declared]) -> dict[str, Any]:
    """A row given to ``live_touch``: an instance, or a mapping by field name or attname."""
    if isinstance(row, Model):
        return {a: getattr(row, a) for d in declared for a in d.attnames.values()}
    values = dict(row)
    for one in declared:
        for name, attname in one.attnames.items():
            if attname not in values and name in values:
                values[attname] = values[name]
    return values


# -- the signals ----------------------------------------------------------------------------


def _bump(live: _LiveModel) -> Callable[..., None]:
    def bump_version(sender: type, instance: Model, raw: bool = False, **kwargs: Any) -> None:
        if raw:  # fixtures load rows as they are
            return
        loaded = _loaded(instance)
        for version in live.versions:
            current = instance.__dict__.get(version)
            if loaded is not None and version in loaded:
                if current == loaded[version] and isinstance(current, int):
                    setattr(instance, version, current + 1)
            elif instance._state.adding and not current:
                setattr(instance, version, 1)

    return bump_version


def _saved(live: _LiveModel) -> Callable[..., None]:
    def record_save(
        sender: type, instance: Model, created: bool, raw: bool = False, **kwargs: Any
    ) -> None:
        if raw:
            return
        stored = live.saved(instance)
        state = instance.__dict__
        previous = _loaded(instance)
        loaded = None if created else previous
        using = kwargs.get("using") or instance._state.db
        hooks = []
        for one in live.declared:
            old = None if loaded is None else one.values(loaded)
            hooks.append(_record(one.rt, Change.saved(one.spec, old, one.values(stored)), using))
        state[LOADED] = stored
        if hooks and hooks[0] is not None:
            state.setdefault(UNDO, []).append((hooks[0], connections[using], previous))

    return record_save


def _deleted(live: _LiveModel) -> Callable[..., None]:
    def record_delete(sender: type, instance: Model, **kwargs: Any) -> None:
        loaded = _loaded(instance)
        stored = {**live.stored(instance), **(loaded or {})}
        using = kwargs.get("using") or instance._state.db
        for one in live.declared:
            _record(one.rt, Change.deleted(one.spec, one.values(stored)), using)

    return record_delete


# -- on commit ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)  # found by identity in the on-commit list
class _Pending:
    """One connection's committed changes, filled by their on-commit callbacks (those of a
    rolled-back savepoint never run) and published by the flush that runs after them."""

    buffers: dict[int, tuple[Realtime, ChangeBuffer]] = field(default_factory=dict)

    def record(self, rt: Realtime, change: Change) -> None:
        entry = self.buffers.get(id(rt))
        if entry is None:
            entry = self.buffers[id(rt)] = (rt, ChangeBuffer())
        entry[1].record(change)

    def flush(self) -> None:
        buffers, self.buffers = self.buffers, {}
        for rt, buffer in buffers.values():
            rt.live_models.publish(buffer.commit())


@dataclass(slots=True, eq=False)
class _Hook:
    """A change's on-commit callback (a function: Django names it in its log should it
    fail), and whether it ran: that tells a committed change from one whose savepoint or
    transaction rolled back (Django dropped its callback unrun)."""

    callback: Callable[[], None]
    ran: bool = False


def _record(rt: Realtime, change: Change, using: str) -> _Hook | None:
    """Publish ``change`` when its transaction commits; its on-commit hook (None in
    autocommit, where it is published at once)."""
    connection = connections[using]
    if not connection.in_atomic_block:
        # Autocommit: the row is committed already.
        rt.live_models.publish(fold([change]))
        return None
    pending = connection.__dict__.get(HOOKS)
    if pending is None:
        pending = connection.__dict__[HOOKS] = _Pending()

    def live_change_committed() -> None:
        hook.ran = True
        pending.record(rt, change)

    hook = _Hook(live_change_committed)
    transaction.on_commit(live_change_committed, using=using, robust=True)
    _flush_last(connection, pending.flush)
    return hook


def _loaded(instance: Model) -> dict[str, Any] | None:
    """The declared fields as the database holds them, as far as the instance knows: its
    values as loaded, or as last saved, unless that save rolled back (Django dropped its
    on-commit callback unrun), in which case what was loaded before it, and so on. No
    query: the connection's on-commit list is searched, only after a save in a transaction."""
    state = instance.__dict__
    undo: list[tuple[_Hook, Any, dict[str, Any] | None]] | None = state.get(UNDO)
    while undo:
        hook, connection, previous = undo[-1]
        if hook.ran:
            del state[UNDO]  # committed, and every earlier save was over before it
            break
        # From the end: the instance's last save is usually among the latest callbacks.
        callback = hook.callback
        if any(entry[1] is callback for entry in reversed(connection.run_on_commit)):
            break  # its transaction is still open
        undo.pop()
        if previous is None:
            state.pop(LOADED, None)
        else:
            state[LOADED] = previous
    if undo == []:
        del state[UNDO]
    loaded: dict[str, Any] | None = state.get(LOADED)
    return loaded


def _flush_last(connection: Any, flush: Callable[[], None]) -> None:
    """Keep ``flush`` the connection's last on-commit callback, outside every savepoint (so
    no savepoint rollback drops it). Django keeps ``(savepoint ids, callback, robust)``
    entries in ``run_on_commit`` and runs them in order; the flush is usually second to
    last (before the change just added), so the search from the end is short."""
    hooks = connection.run_on_commit
    for index in range(len(hooks) - 1, -1, -1):
        if hooks[index][1] == flush:
            del hooks[index]
            break
    hooks.append((set(), flush, True))
