"""Writing one transaction's engine rows in as few round trips as possible.

A step changes up to four rows: the finished attempt, the next attempt, the
saga and its events. On PostgreSQL they are kept until the transaction ends
(or until something is about to read them back) and written in one statement,
data-modifying common table expressions joined by a ``WITH``; a row inserted
there is referred to by the others through its expression. Elsewhere each is
written at once, as the ORM would.

Values are read from the instances when the rows are written, so a row changed
twice before that is written once, with its last values.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import DatabaseDefault, ExpressionWrapper
from django.db.models.functions import Now
from django.db.models.sql import UpdateQuery

from sagas import conf
from sagas.models import Saga, SagaEvent, StepAttempt

Row = Saga | StepAttempt


# Every step sets a deadline or two: one output field for all (building a
# field cost more than the rest of the expression).
_DATETIME: models.DateTimeField[Any, Any] = models.DateTimeField()


class DbTime(ExpressionWrapper):
    """The database's clock plus ``seconds``: deadlines never trust a worker's clock."""

    def __init__(self, seconds: float) -> None:
        expression = Now() + timedelta(seconds=seconds) if seconds else Now()
        super().__init__(expression, output_field=_DATETIME)
        self.seconds = seconds


@dataclass
class _Pending:
    instance: Row
    insert: bool
    names: set[str] = field(default_factory=set)
    # Fields written with a database expression: their values come back.
    computed: list[models.Field[Any, Any]] = field(default_factory=list)


# Each row written on PostgreSQL is given back its ``xmin`` (as text): the
# version of the row this transaction wrote, which a later transaction can
# compare to tell whether anyone has written the row since.
XMIN = "row_xmin"


class Batch:
    """The writes of one transaction, deferred on PostgreSQL, immediate elsewhere."""

    def __init__(self, deferred: bool = True) -> None:
        self.deferred = deferred and connection.vendor == "postgresql"
        self._rows: list[_Pending] = []
        self._events: list[Event] = []
        self._after: list[Callable[[], None]] = []

    def insert(self, instance: Row) -> None:
        """Insert ``instance``; its primary key is set once it is written."""
        if not self.deferred:
            instance.save(force_insert=True)
            return
        self._rows.append(_Pending(instance, insert=True))

    def update(self, instance: Row, names: Sequence[str]) -> None:
        """Write fields of an existing row (or of one inserted in this batch)."""
        if not self.deferred:
            save_fields(instance, names)
            return
        for pending in self._rows:
            if pending.instance is instance:
                pending.names.update(names)
                return
        self._rows.append(_Pending(instance, insert=False, names=set(names)))

    def add_events(self, events: Sequence[Event]) -> None:
        """Insert events (``id`` and ``created_at`` are column defaults)."""
        if not self.deferred:
            insert_events(events)
            return
        self._events.extend(events)

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every row so far is written (primary keys known)."""
        if not self.deferred or not (self._rows or self._events):
            callback()
            return
        self._after.append(callback)

    def flush(self) -> None:
        """Write everything kept so far in one statement."""
        rows, events, after = self._rows, self._events, self._after
        self._rows, self._events, self._after = [], [], []
        if rows or events:
            _write(rows, events)
        for callback in after:
            callback()


def _write(rows: list[_Pending], events: list[Event]) -> None:
    db = connections[DEFAULT_DB_ALIAS]
    aliases = {id(pending.instance): f"w{i}" for i, pending in enumerate(rows)}
    parts: list[str] = []
    params: list[Any] = []
    results: list[str] = []
    for i, pending in enumerate(rows):
        alias = f"w{i}"
        info = _info(type(pending.instance))
        pending.computed = []
        if pending.insert:
            sql, values = _insert_sql(
                db, info, pending.instance, aliases, pending.computed
            )
            returning = info.returning
        else:
            sql, values = _update_sql(
                db, info, pending.instance, pending.names, aliases, pending.computed
            )
            returning = []
        returning = [
            *returning,
            *(info.columns[f.name][1] for f in pending.computed),
            f"xmin::text AS {XMIN}",
        ]
        sql += f" RETURNING {', '.join(returning)}"
        results += [
            f"(SELECT {column.rsplit(' ', 1)[-1]} FROM {alias})" for column in returning
        ]
        parts.append(f"{alias} AS ({sql})")
        params += values
    if events:
        # One JSON parameter: the same statement however many events (a
        # statement of many parameters costs more to bind, and psycopg does
        # not keep it in its cache).
        parts.append(f"e AS ({_EVENTS_JSON_SQL})")
        params.append(_events_json(events))
    select = ", ".join(results) if results else "1"
    row = fetch_one(f"WITH {', '.join(parts)} SELECT {select}", params)
    assert row is not None
    _apply(db, rows, list(row))


def _apply(db: BaseDatabaseWrapper, rows: list[_Pending], values: list[Any]) -> None:
    """Give rows their returned values; check each update hit its row.

    Each row gets the values of its database defaults (inserted) and of its
    fields written with a database expression (the clock), and ``row_xmin``.
    """
    position = 0
    for pending in rows:
        instance = pending.instance
        returned = pending.computed
        if pending.insert:
            returned = [*_info(type(instance)).returning_fields, *returned]
        # ``xmin`` comes last: NULL when an update found no row.
        xmin = values[position + len(returned)]
        if xmin is None:
            raise DatabaseError("Save with update_fields did not affect any rows.")
        for field_ in returned:
            value = values[position]
            for convert in field_.get_db_converters(db):  # type: ignore[attr-defined]
                value = convert(value, field_, db)
            setattr(instance, field_.attname, value)
            position += 1
        position += 1
        setattr(instance, XMIN, xmin)
        if pending.insert:
            instance._state.adding = False
            instance._state.db = db.alias
    # Foreign keys to rows inserted here were written by reference: copy the
    # primary keys they now have.
    for pending in rows:
        for field_ in _info(type(pending.instance)).foreign_keys:
            if field_.is_cached(pending.instance):
                related = field_.get_cached_value(pending.instance)
                if related is not None and related.pk is not None:
                    setattr(pending.instance, field_.attname, related.pk)
                    # Setting the id drops the cached row: keep it.
                    field_.set_cached_value(pending.instance, related)


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Run one statement on the default database; return its first row.

    With ``SAGAS_PREPARED_STATEMENTS`` (PostgreSQL), the statement is bound on
    the server and prepared once per connection: the step path sends the same
    few statements over and over, and planning them each time cost more than
    running them.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or not conf.get("SAGAS_PREPARED_STATEMENTS"):
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    db.ensure_connection()
    if db.connection.prepare_threshold is None:
        # Django turns preparing off (None) for poolers; a threshold no
        # statement reaches keeps it off for every other query, while these
        # ask for it explicitly.
        db.connection.prepare_threshold = _NEVER
    began = time.monotonic()
    cursor = _engine_cursor(db)
    cursor.execute(sql, params)
    row = cursor.fetchone()
    if db.queries_logged:
        # As Django's debug cursor would, with the statement as written (a
        # server-bound one has no text with its values).
        duration = time.monotonic() - began
        db.queries_log.append({"sql": sql, "time": f"{duration:.3f}"})
    return row


_NEVER = 2**31 - 1


# The attribute of a Django connection holding the engine's cursor on it.
CURSOR_ATTRIBUTE = "_sagas_engine_cursor"


def _engine_cursor(db: BaseDatabaseWrapper) -> Any:
    """Return the engine's cursor on ``db``'s connection, Django's errors and all.

    Its ``timestamptz`` columns are read by psycopg's C loader when that
    gives what Django's own loader would: the connection's time zone is
    Django's (Django's loader, in Python, cost a few microseconds per column
    on every step).
    """
    raw = db.connection
    wrapped = getattr(db, CURSOR_ATTRIBUTE, None)
    # One per connection: a new connection (reconnected, or past
    # CONN_MAX_AGE) replaces it, and the old one goes with the old connection.
    if wrapped is None or wrapped.cursor.connection is not raw or wrapped.cursor.closed:
        from psycopg.types.datetime import TimestamptzLoader

        cursor = _prepared_cursor()(raw)
        if raw.info.timezone == db.timezone:
            cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        wrapped = db.make_cursor(cursor)
        setattr(db, CURSOR_ATTRIBUTE, wrapped)
    return wrapped


@functools.cache
def _prepared_cursor() -> type[Any]:
    import psycopg

    class PreparedCursor(psycopg.Cursor[Any]):
        """A server-binding cursor that prepares every statement it runs."""

        def execute(  # type: ignore[override]
            self, query: Any, params: Any = None, *, prepare: bool | None = None
        ) -> PreparedCursor:
            super().execute(query, params, prepare=True)
            return self

    return PreparedCursor


@dataclass(frozen=True)
class _Info:
    """What writing rows of one model needs, worked out once."""

    table: str
    pk: models.Field[Any, Any]
    pk_column: str
    columns: dict[str, tuple[models.Field[Any, Any], str]]
    insert_fields: list[tuple[models.Field[Any, Any], str]]
    returning_fields: list[models.Field[Any, Any]]
    returning: list[str]
    foreign_keys: list[models.ForeignKey[Any, Any]]
    # Nullable columns with no database default (nor a reference to a row of
    # the same statement): left out of an insert when they are None.
    null_unless_written: frozenset[models.Field[Any, Any]]
    compiler: Any


_INFO: dict[type[Any], _Info] = {}


def _info(model: type[Row]) -> _Info:
    info = _INFO.get(model)
    if info is not None:
        return info
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    quote = connection.ops.quote_name
    fields: list[models.Field[Any, Any]] = [
        f for f in meta.concrete_fields if isinstance(f, models.Field)
    ]
    returning_fields = [] if isinstance(pk, models.UUIDField) else [pk]
    returning_fields += [f for f in fields if f.has_db_default()]  # type: ignore[attr-defined]
    info = _Info(
        table=quote(meta.db_table),
        pk=pk,
        pk_column=quote(pk.column),
        columns={f.name: (f, quote(f.column)) for f in fields}
        | {f.attname: (f, quote(f.column)) for f in fields},
        insert_fields=[(f, quote(f.column)) for f in fields],
        returning_fields=returning_fields,
        returning=[quote(f.column) for f in returning_fields],
        foreign_keys=[f for f in fields if isinstance(f, models.ForeignKey)],
        null_unless_written=frozenset(
            f
            for f in fields
            if f.null
            and not f.has_db_default()  # type: ignore[attr-defined]
            and not isinstance(f, models.ForeignKey)
        ),
        compiler=UpdateQuery(model).get_compiler(connection=connection),
    )
    _INFO[model] = info
    return info


# Database-time values the engine writes on every step, compiled once.
_EXPRESSIONS: dict[tuple[str, bool], tuple[str, list[Any]]] = {}


def _value_sql(
    db: BaseDatabaseWrapper,
    info: _Info,
    instance: Row,
    field_: models.Field[Any, Any],
    value: Any,
    aliases: dict[int, str],
) -> tuple[str, list[Any]]:
    """Return the SQL and parameters that write ``value`` into ``field_``."""
    if value is None:
        if aliases and isinstance(field_, models.ForeignKey):
            related = field_.get_cached_value(instance, default=None)
            if related is not None and related.pk is None and id(related) in aliases:
                pk_column = _info(type(related)).pk_column  # type: ignore[arg-type]
                return f"(SELECT {pk_column} FROM {aliases[id(related)]})", []
        return "%s", [None]
    if not hasattr(value, "resolve_expression"):
        return "%s", [field_.get_db_prep_save(value, db)]
    if db.vendor != "postgresql":
        return _compile(info, value)
    # PostgreSQL adds an interval parameter to its clock: the compiled SQL is
    # the same for every offset.
    if isinstance(value, DbTime):
        key = (db.vendor, bool(value.seconds))
        if key not in _EXPRESSIONS:
            _EXPRESSIONS[key] = _compile(info, DbTime(1.0 if value.seconds else 0))
        sql, template = _EXPRESSIONS[key]
        return sql, [timedelta(seconds=value.seconds)] if template else []
    if type(value) is Now:
        key = (db.vendor, False)
        if key not in _EXPRESSIONS:
            _EXPRESSIONS[key] = _compile(info, DbTime(0))
        return _EXPRESSIONS[key]
    return _compile(info, value)


def _compile(info: _Info, value: Any) -> tuple[str, list[Any]]:
    resolved = value.resolve_expression(
        info.compiler.query, allow_joins=False, for_save=True
    )
    sql, params = info.compiler.compile(resolved)
    return sql, list(params)


def _insert_sql(
    db: BaseDatabaseWrapper,
    info: _Info,
    instance: Row,
    aliases: dict[int, str],
    computed: list[models.Field[Any, Any]],
) -> tuple[str, list[Any]]:
    columns: list[str] = []
    sqls: list[str] = []
    params: list[Any] = []
    for field_, column in info.insert_fields:
        value = field_.pre_save(instance, add=True)
        if isinstance(value, DatabaseDefault) or (field_.primary_key and value is None):
            continue
        if value is None and field_ in info.null_unless_written:
            # The column's default is NULL: no parameter to bind.
            continue
        sql, values = _value_sql(db, info, instance, field_, value, aliases)
        if hasattr(value, "resolve_expression"):
            computed.append(field_)
        columns.append(column)
        sqls.append(sql)
        params += values
    sql = f"INSERT INTO {info.table} ({', '.join(columns)}) VALUES ({', '.join(sqls)})"
    return sql, params


def _update_sql(
    db: BaseDatabaseWrapper,
    info: _Info,
    instance: Row,
    names: Iterable[str],
    aliases: dict[int, str],
    computed: list[models.Field[Any, Any]] | None = None,
) -> tuple[str, list[Any]]:
    sets: list[str] = []
    params: list[Any] = []
    for name in sorted(names):
        field_, column = info.columns[name]
        value = getattr(instance, field_.attname)
        sql, values = _value_sql(db, info, instance, field_, value, aliases)
        if computed is not None and hasattr(value, "resolve_expression"):
            computed.append(field_)
        sets.append(f"{column} = {sql}")
        params += values
    params.append(info.pk.get_db_prep_value(instance.pk, db))
    sql = f"UPDATE {info.table} SET {', '.join(sets)} WHERE {info.pk_column} = %s"
    return sql, params


def save_fields(instance: Row, names: Sequence[str]) -> None:
    """Write fields of a saga or an attempt by primary key, as ``save`` would.

    The same UPDATE as ``save(update_fields=names)`` without its query building,
    which cost several times the statement itself on every step. No model
    signals are sent (the engine announces its changes with ``saga_transition``).
    """
    db = connections[DEFAULT_DB_ALIAS]
    sql, params = _update_sql(db, _info(type(instance)), instance, names, {})
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.rowcount != 1:
            raise DatabaseError("Save with update_fields did not affect any rows.")


class Event(NamedTuple):
    """A ``SagaEvent`` row to insert: every change writes some, no model needed.

    ``id`` and ``created_at`` are column defaults.
    """

    saga_id: UUID
    actor: str
    new_status: str
    step: str = ""
    kind: str = ""
    attempt: int | None = None
    old_status: str = ""
    detail: str = ""


EVENT_COLUMNS = (
    "saga_id", "actor", "step", "kind", "attempt", "old_status", "new_status", "detail"
)  # fmt: skip
# Rows per statement: SQLite builds before 3.32 take at most 999 parameters.
EVENT_ROWS = 100


_EVENT_ROW = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"


def _events_sql(
    db: BaseDatabaseWrapper, events: Sequence[Event]
) -> tuple[str, list[Any]]:
    quote = db.ops.quote_name
    head = (
        f"INSERT INTO {quote(SagaEvent._meta.db_table)}"
        f" ({', '.join(quote(column) for column in EVENT_COLUMNS)}) VALUES "
    )
    saga_pk = Saga._meta.pk
    assert saga_pk is not None
    params: list[Any] = []
    for event in events:
        params += [
            saga_pk.get_db_prep_value(event.saga_id, db),
            event.actor,
            event.step,
            event.kind,
            event.attempt,
            event.old_status,
            event.new_status,
            event.detail,
        ]
    return head + ", ".join([_EVENT_ROW] * len(events)), params


_EVENT_TYPES = ("uuid", "text", "text", "text", "integer", "text", "text", "text")
_EVENTS_JSON_SQL = (
    f"INSERT INTO {SagaEvent._meta.db_table} ({', '.join(EVENT_COLUMNS)})"
    f" SELECT {', '.join(EVENT_COLUMNS)} FROM json_to_recordset(%s::json) AS e("
    + ", ".join(f"{n} {t}" for n, t in zip(EVENT_COLUMNS, _EVENT_TYPES, strict=True))
    + ")"
)


def _events_json(events: Sequence[Event]) -> str:
    """Return the events as one JSON array of rows (PostgreSQL)."""
    return json.dumps(
        [{**event._asdict(), "saga_id": str(event.saga_id)} for event in events],
        separators=(",", ":"),
    )


def insert_events(events: Sequence[Event]) -> None:
    """Insert events with plain SQL; ``id`` and ``created_at`` are column defaults.

    Every transition writes events: ``bulk_create`` spent more CPU building
    the statement than the database spent running it.
    """
    db = connections[DEFAULT_DB_ALIAS]
    for start in range(0, len(events), EVENT_ROWS):
        sql, params = _events_sql(db, events[start : start + EVENT_ROWS])
        with db.cursor() as cursor:
            cursor.execute(sql, params)


class Redispatch(NamedTuple):
    """An attempt sent again by the sweeper: a backoff over, or a lease lapsed."""

    saga_id: UUID
    attempt_id: int
    # A scheduled attempt becomes dispatched (``status``, ``dispatched_at``);
    # a dispatched one only counts the dispatch.
    due: bool
    status: str
    # The attempt's deadline (new for a due one), and when its saga wakes.
    deadline: datetime
    wake: datetime


def redispatch(
    rows: Sequence[Redispatch], events: Sequence[Event], *, now: datetime
) -> bool:
    """Record a sweep's re-sends and their events in one statement.

    The attempts, their sagas and the events, however many rows. Only on
    PostgreSQL: elsewhere return False, and the caller writes them.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return False
    if rows:
        found = fetch_one(_REDISPATCH_SQL, _redispatch_params(rows, events, now))
        if found != (len(rows), len(rows)):
            raise DatabaseError(f"re-sent {len(rows)} attempts but wrote {found}")
    return True


def _redispatch_sql() -> str:
    attempts, sagas = StepAttempt._meta.db_table, Saga._meta.db_table
    return f"""
WITH v (attempt, saga, due, status, deadline, wake) AS (
    SELECT * FROM unnest(
        %s::bigint[], %s::uuid[], %s::boolean[], %s::text[], %s::timestamptz[],
        %s::timestamptz[]
    )
), a AS (
    UPDATE {attempts} AS t SET
        dispatches = t.dispatches + 1,
        status = v.status,
        dispatched_at = CASE WHEN v.due THEN %s ELSE t.dispatched_at END,
        not_before = CASE WHEN v.due THEN NULL ELSE t.not_before END,
        deadline_at = v.deadline
    FROM v WHERE t.id = ANY(%s::bigint[]) AND t.id = v.attempt
    RETURNING 1
), s AS (
    UPDATE {sagas} AS s SET wake_at = v.wake
    FROM v WHERE s.id = ANY(%s::uuid[]) AND s.id = v.saga
    RETURNING 1
), e AS ({_EVENTS_JSON_SQL})
SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM s)"""


# Every column goes as one array, the events as one JSON array: a hundred rows
# are ten parameters.
_REDISPATCH_SQL = _redispatch_sql()


def _redispatch_params(
    rows: Sequence[Redispatch],
    events: Sequence[Event],
    now: datetime,
) -> list[Any]:
    def column(name: str) -> list[Any]:
        return [getattr(row, name) for row in rows]

    # The key arrays twice: as the join's rows, and as the condition that
    # makes the planner look the rows up by primary key.
    return [
        column("attempt_id"),
        column("saga_id"),
        column("due"),
        column("status"),
        column("deadline"),
        column("wake"),
        now,
        column("attempt_id"),
        column("saga_id"),
        _events_json(events),
    ]
