"""Behaviour shared by the sandbox providers."""

from __future__ import annotations

import functools
import time
from typing import Any

from django.conf import settings
from django.db import connections, models

from config.routers import SANDBOX_ALIAS


def network_latency() -> None:
    """Sleep for ``SANDBOX_LATENCY_MS``, as a call to a remote provider would."""
    latency = getattr(settings, "SANDBOX_LATENCY_MS", 0)
    if latency:
        time.sleep(latency / 1000)


def insert_new(model: type[models.Model], unique: str, **values: Any) -> int | None:
    """Insert a provider's row unless its ``unique`` field's value is taken.

    Return the new row's id, or None when a row with that value exists (or is
    being written by a concurrent call, which this one waits for). One
    statement, in the caller's transaction on the sandbox connection; columns
    left out get their database defaults.
    """
    connection = connections[SANDBOX_ALIAS]
    sql = _insert_sql(model, unique, tuple(values))
    params = []
    for name, value in values.items():
        field = model._meta.get_field(name)
        assert isinstance(field, models.Field)
        params.append(field.get_db_prep_value(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


@functools.cache
def _insert_sql(model: type[models.Model], unique: str, names: tuple[str, ...]) -> str:
    quote = connections[SANDBOX_ALIAS].ops.quote_name
    meta = model._meta
    assert meta.pk is not None
    columns = ", ".join(quote(_column(model, name)) for name in names)
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns})"
        f" VALUES ({', '.join(['%s'] * len(names))})"
        f" ON CONFLICT ({quote(_column(model, unique))}) DO NOTHING"
        f" RETURNING {quote(meta.pk.column)}"
    )


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field.column
