"""What an ORM shell gives the live layer, and which shell a model class needs.

A shell is a module: :mod:`tidings.live.django` (a ``django.db.models.Model`` subclass) or
:mod:`tidings.live.sqlalchemy` (a mapped class), imported only when a model needs it.
"""

from __future__ import annotations

import importlib
import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from tidings.live.model import LiveSpec
    from tidings.live.provider import Reader
    from tidings.realtime import Realtime


class Shell(Protocol):
    def reader(self, spec: LiveSpec) -> Reader:
        """Reads the declared fields of one instance, with no query."""
        ...

    def register(self, rt: Realtime, spec: LiveSpec) -> None:
        """Start recording the saves and deletes of ``spec.model`` (Django: its signals;
        SQLAlchemy: nothing, ``rt.live_sqlalchemy(session)`` connects the session)."""
        ...

    def touch(
        self,
        rt: Realtime,
        specs: list[LiveSpec],
        ids: list[Any],
        deleted: bool,
        rows: list[Any] | None,
        old: list[Any] | None,
    ) -> None:
        """``rt.live_touch``: record rows changed behind the ORM's back, published on commit."""
        ...

    def changes(
        self, rt: Realtime, specs: list[LiveSpec], ids: list[Any], session: Any
    ) -> AbstractContextManager[None]:
        """``rt.live_changes``: record what a block does to these rows, read before and
        after it, published on commit."""
        ...


def shell_for(model: type) -> Shell:
    if _is_django_model(model):
        return cast(Shell, importlib.import_module("tidings.live.django"))
    if _is_mapped(model):
        return cast(Shell, importlib.import_module("tidings.live.sqlalchemy"))
    raise TypeError(
        f"{model!r} is neither a Django model nor an SQLAlchemy mapped class: @rt.live "
        "publishes rows of those"
    )


def _is_django_model(model: type) -> bool:
    # Only when the app imported Django: a model class cannot exist otherwise.
    if "django.db.models" not in sys.modules:
        return False
    models: Any = sys.modules["django.db.models"]
    return isinstance(model, type) and issubclass(model, models.Model)


def _is_mapped(model: type) -> bool:
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoInspectionAvailable

    try:
        return inspect(model, raiseerr=False) is not None
    except NoInspectionAvailable:
        return False
