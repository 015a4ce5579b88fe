"""Statements the domain services send for every order, built once.

Building a query with the ORM costs a saga step's worker several times the CPU
of running it, and a step's services send the same few statements for every
order: these helpers build each one once per database and bind new values to
it. They stay portable: a row lock is left out where the database has none
(SQLite locks the whole database for a write transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.expressions import DatabaseDefault
from django.db.models.functions import Now
from django.db.models.sql import Query

_M = TypeVar("_M", bound=models.Model)


def fetch(
    sql: str, params: Sequence[Any], *, using: str = DEFAULT_DB_ALIAS
) -> list[tuple[Any, ...]]:
    """Run a query on ``using``; return its rows."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any], *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Run a statement on ``using``; return the number of rows it changed."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def value(
    model: type[models.Model], name: str, value: Any, *, using: str = DEFAULT_DB_ALIAS
) -> Any:
    """Return ``value`` as the database takes it for the field ``name``."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field.get_db_prep_save(value, connections[using])


@functools.cache
def now(using: str = DEFAULT_DB_ALIAS) -> str:
    """Return the database's clock in SQL, as ``Now()`` compiles on ``using``."""
    compiler = Query(None).get_compiler(using=using)
    sql, params = compiler.compile(Now())
    assert not params
    return str(sql)


def lock(using: str = DEFAULT_DB_ALIAS, *, of: str | None = None) -> str:
    """Return the ``FOR UPDATE`` clause for ``using`` (empty where it has none).

    ``of``: the table whose rows to lock, where a query joins several.
    """
    features = connections[using].features
    if not features.has_select_for_update:
        return ""
    if of is not None and features.has_select_for_update_of:
        return f" FOR UPDATE OF {connections[using].ops.quote_name(of)}"
    return " FOR UPDATE"


def insert(
    model: type[models.Model],
    *,
    using: str = DEFAULT_DB_ALIAS,
    returning: Sequence[str] = ("id",),
    unique: str | None = None,
    **values: Any,
) -> tuple[Any, ...] | None:
    """Insert one row of ``model``; return the ``returning`` columns' values.

    Columns left out get their database defaults. With ``unique`` (a field's
    name), a row whose value is taken (or is being written by a concurrent
    call, which this one waits for) is left as it is, and None is returned.
    """
    sql = _insert_sql(model, using, tuple(values), tuple(returning), unique)
    params = [value(model, name, v, using=using) for name, v in values.items()]
    if not returning:
        execute(sql, params, using=using)
        return ()
    rows = fetch(sql, params, using=using)
    if not rows:
        return None
    return _converted(model, returning, rows[0], using)


def create(model: type[_M], *, using: str = DEFAULT_DB_ALIAS, **values: Any) -> _M:
    """Insert a row and return its instance, as ``objects.create(**values)`` would.

    Fields left out get their defaults; the primary key and the columns with
    database defaults come back from the insert. No model signals are sent.
    """
    instance = model(**values)
    connection = connections[using]
    names: list[str] = []
    params: list[Any] = []
    returning: list[models.Field[Any, Any]] = []
    for field in model._meta.concrete_fields:
        assert isinstance(field, models.Field)
        v = field.pre_save(instance, add=True)
        if isinstance(v, DatabaseDefault) or (field.primary_key and v is None):
            returning.append(field)
            continue
        names.append(field.name)
        params.append(field.get_db_prep_save(v, connection))
    back = tuple(field.name for field in returning)
    sql = _insert_sql(model, using, tuple(names), back, None)
    if not returning:
        execute(sql, params, using=using)
        return _saved(instance, using)
    row = fetch(sql, params, using=using)[0]
    for field, v in zip(returning, _converted(model, back, row, using), strict=True):
        setattr(instance, field.attname, v)
    return _saved(instance, using)


def _saved(instance: _M, using: str) -> _M:
    instance._state.adding = False
    instance._state.db = using
    return instance


def _converted(
    model: type[models.Model], names: Sequence[str], row: Sequence[Any], using: str
) -> tuple[Any, ...]:
    """Return a row's values as the fields ``names`` hold them in Python."""
    connection = connections[using]
    converted = []
    for name, raw in zip(names, row, strict=True):
        column, converters = _converters(model, name, using)
        for convert in converters:
            raw = convert(raw, column, connection)
        converted.append(raw)
    return tuple(converted)


@functools.cache
def _converters(
    model: type[models.Model], name: str, using: str
) -> tuple[Any, tuple[Any, ...]]:
    """Return a field's column and how the ORM reads it: backend's, then field's."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    column = field.get_col(model._meta.db_table)
    connection = connections[using]
    backend = connection.ops.get_db_converters(column)
    return column, tuple(backend + column.get_db_converters(connection))


@functools.cache
def _insert_sql(
    model: type[models.Model],
    using: str,
    names: tuple[str, ...],
    returning: tuple[str, ...],
    unique: str | None,
) -> str:
    connection = connections[using]
    if returning and not connection.features.can_return_columns_from_insert:
        raise NotImplementedError(f"{connection.vendor} cannot return inserted rows")
    quote = connection.ops.quote_name
    back = f" RETURNING {_columns(model, returning, using)}" if returning else ""
    conflict = ""
    if unique is not None:
        conflict = f" ON CONFLICT ({_columns(model, [unique], using)}) DO NOTHING"
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({_columns(model, names, using)})"
        f" VALUES ({', '.join(['%s'] * len(names))}){conflict}{back}"
    )


def _columns(model: type[models.Model], names: Iterable[str], using: str) -> str:
    """Return the quoted columns of ``model``'s fields ``names``, comma-separated."""
    quote = connections[using].ops.quote_name
    meta = model._meta
    found = []
    for name in names:
        field = meta.get_field(name)
        assert isinstance(field, models.Field)
        found.append(quote(field.column))
    return ", ".join(found)
