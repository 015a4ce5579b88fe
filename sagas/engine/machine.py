"""The saga state machine: the only code that writes a saga's or an attempt's status.

Verbs above it (``start``, ``execution``, ``sweeper``, ``operators``) decide
*what* happens; this module decides whether it may, and writes it:

- ``lock_saga`` / ``operator_transaction``: take the saga row lock;
- ``Transition``: change statuses through the tables in ``sagas.states``, write
  one ``SagaEvent`` per change in the same transaction, log and signal on commit;
- ``advance`` / ``dispatch_now`` / ``resend``: create, dispatch and re-send
  attempts, each with its lease (``lease_for``);
- ``record_failure`` / ``continue_after``: what a failed or finished attempt
  means for the saga: retry, go on, compensate, end or park.

Concurrency: a worker executing a step holds the saga row lock for the whole
step (action included), so a duplicate message waits, then finds its attempt
superseded and does nothing; sweepers skip locked rows, which is how they tell
a step being executed from a step whose worker or message was lost.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import structlog
from django.db import (
    DatabaseError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Least, Now

from sagas import conf, registry, tracing
from sagas.definition import (
    Remote,
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
    Wait,
    WaitTimeout,
)
from sagas.dispatch import REPLY_TASK, Send, send_command_on_commit, send_many_on_commit
from sagas.engine import writes
from sagas.errors import OperatorActionRefused, SagaError, StepResultError
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.redaction import scrubbed_context
from sagas.signals import saga_transition
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    OPEN_ATTEMPT_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
    check_attempt_transition,
    check_saga_transition,
)

log = structlog.get_logger("sagas.engine")

ENGINE = "engine"
SWEEPER = "sweeper"

# Column sizes: text written into them is cut to fit rather than failing the
# transaction that records a failure.
_ACTOR_MAX = 150
_ERROR_TYPE_MAX = 200
_ERROR_MAX = 10_000
_DETAIL_MAX = 2000


class StepTimedOut(Exception):
    """A step ran past its deadline; its effects are unknown."""


class PoisonMessage(Exception):
    """A step message crashed its worker more often than allowed."""


class DefinitionUnavailable(SagaError):
    """The saga's definition version, or the attempt's step, is not in the code."""


def operator_actor(actor: str) -> str:
    """Return the actor recorded for an operator: ``operator:<name>``."""
    return actor if actor.startswith("operator:") else f"operator:{actor}"


def clean_text(text: str, limit: int) -> str:
    """Return ``text`` storable anywhere: no NUL (PostgreSQL refuses it), cut."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_fields(exc: BaseException) -> tuple[str, str]:
    """Return (error type, message) of ``exc`` as stored on an attempt."""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    message = str(exc) or type(exc).__name__
    return clean_text(kind, _ERROR_TYPE_MAX), clean_text(message, _ERROR_MAX)


def db_in(seconds: float) -> writes.DbTime:
    """Return "database now + seconds": deadlines never trust a worker's clock."""
    return writes.DbTime(seconds)


def lease_for(step: Step) -> float:
    """Return how long a dispatched attempt may wait before it is re-sent."""
    return min(conf.get("SAGAS_DISPATCH_LEASE"), step.timeout)


def budget_for(definition: SagaDefinition) -> float:
    """Return how long one step task of this saga may run in all.

    Its longest step, plus the time it may spend continuing the saga inline.
    """
    longest = max(step.timeout for step in definition.steps)
    return longest + conf.get("SAGAS_INLINE_SECONDS")


@dataclass
class Continuation:
    """The next attempt of the saga a worker is running, kept instead of sent.

    ``saga``: the saga as the transaction that recorded the attempt wrote it,
    which the next step may start from instead of reading it again
    (``relock_saga``).
    """

    saga_id: str
    attempt_id: int | None = None
    budget: float = 0.0
    saga: Saga | None = None

    def take(self) -> Send | None:
        """Return the kept attempt as a message to send or run, and forget it."""
        if self.attempt_id is None:
            return None
        send = Send(UUID(self.saga_id), self.attempt_id, self.budget)
        self.attempt_id = None
        return send

    def take_saga(self) -> Saga | None:
        """Return the saga as last written here, and forget it."""
        saga, self.saga = self.saga, None
        return saga


_continuation: ContextVar[Continuation | None] = ContextVar(
    "sagas_continuation", default=None
)


def forget_continuation() -> None:
    """Drop a kept attempt: the transaction that recorded it is being redone."""
    holder = _continuation.get()
    if holder is not None:
        holder.attempt_id = None
        holder.saga = None


@contextlib.contextmanager
def continuing(saga_id: UUID | str) -> Iterator[Continuation]:
    """Keep the saga's next attempt for this worker instead of sending it.

    Inside the block, an attempt created for this saga without a backoff is
    recorded (dispatched, with its lease) but not sent: the caller runs it
    itself, or sends it. A crash in between is recovered like a lost message.
    """
    holder = Continuation(str(saga_id))
    token = _continuation.set(holder)
    try:
        yield holder
    finally:
        _continuation.reset(token)


# --- locking ------------------------------------------------------------------


def lock_saga(
    saga_id: UUID | str, *, skip_locked: bool = False, nowait: bool = False
) -> Saga | None:
    """Lock a saga row (with its current attempt and the database time)."""
    query = _lock_query(connection.alias, connection.vendor, skip_locked, nowait)
    return query.fetch(saga_id)


def relock_saga(saga: Saga) -> Saga | None:
    """Lock a saga this process wrote last; return it if nobody wrote it since.

    ``saga`` is the instance a committed transaction of this process wrote,
    with its current attempt: if both rows are still the versions it wrote
    (``xmin``), the instance is the row, and only its context is read again
    (a step's function may have changed its copy). Otherwise None: the caller
    locks it with ``lock_saga``, as if nothing had been kept.
    """
    # The attempt the write left cached; never loaded here (that would be a
    # query of its own).
    attempt = _CURRENT_ATTEMPT.get_cached_value(saga, default=None)
    fence = (
        getattr(saga, writes.XMIN, None),
        getattr(attempt, writes.XMIN, None),
    )
    if connection.vendor != "postgresql" or None in fence:
        return None
    pk = Saga._meta.pk
    assert pk is not None
    row = writes.fetch_one(_relock_sql(), [pk.get_db_prep_value(saga.pk, connection)])
    if row is None or (row[0], row[1]) != fence:
        return None
    saga.db_now = row[2]  # type: ignore[attr-defined]
    context = row[3]
    for converter in _CONTEXT.get_db_converters(connection):  # type: ignore[attr-defined]
        context = converter(context, _CONTEXT, connection)
    saga.context = context
    return saga


_CONTEXT: models.JSONField[Any, Any] = Saga._meta.get_field("context")  # type: ignore[assignment]
_CURRENT_ATTEMPT: models.ForeignKey[Any, Any] = Saga._meta.get_field(  # type: ignore[assignment]
    "current_attempt"
)


@functools.cache
def _relock_sql() -> str:
    quote = connection.ops.quote_name
    return (
        f"SELECT s.xmin::text, a.xmin::text, STATEMENT_TIMESTAMP(),"
        f" s.{quote(_CONTEXT.column)}"
        f" FROM {quote(Saga._meta.db_table)} s"
        f" LEFT JOIN {quote(StepAttempt._meta.db_table)} a"
        f" ON a.{quote('id')} = s.{quote(_CURRENT_ATTEMPT.column)}"
        f" WHERE s.{quote('id')} = %s FOR UPDATE OF s"
    )


def _lock_queryset(skip_locked: bool, nowait: bool, saga_id: Any) -> Any:
    return (
        Saga.objects.select_for_update(
            skip_locked=skip_locked, nowait=nowait, of=("self",)
        )
        .select_related("current_attempt")
        .annotate(db_now=Now())
        .filter(pk=saga_id)
    )


@dataclass(frozen=True)
class _LockQuery:
    """``lock_saga``'s query compiled once: every step runs it first.

    Building and compiling it through the ORM cost ten times its execution;
    the rows are still converted and turned into models as the ORM would.
    """

    sql: str
    converters: dict[int, Any]
    saga_columns: list[int]
    now_column: int
    attempt_columns: list[int]

    def fetch(self, saga_id: Any) -> Saga | None:
        pk = Saga._meta.pk
        assert pk is not None
        value = pk.get_db_prep_value(pk.to_python(saga_id), connection)
        row = writes.fetch_one(self.sql, [value])
        if row is None:
            return None
        values = list(row)
        for index, (convert, expression) in self.converters.items():
            for converter in convert:
                values[index] = converter(values[index], expression, connection)
        saga = Saga.from_db(
            connection.alias,
            _SAGA_NAMES,
            [values[i] for i in self.saga_columns],
        )
        saga.db_now = values[self.now_column]  # type: ignore[attr-defined]
        attempt_values = [values[i] for i in self.attempt_columns]
        saga.current_attempt = (
            None
            if attempt_values[_ATTEMPT_PK] is None
            else StepAttempt.from_db(connection.alias, _ATTEMPT_NAMES, attempt_values)
        )
        return saga


_SAGA_NAMES = [f.attname for f in Saga._meta.concrete_fields]
_ATTEMPT_NAMES = [f.attname for f in StepAttempt._meta.concrete_fields]
_ATTEMPT_PK = _ATTEMPT_NAMES.index("id")
_LOCK_QUERIES: dict[tuple[str, str, bool, bool], _LockQuery] = {}


def _lock_query(alias: str, vendor: str, skip_locked: bool, nowait: bool) -> _LockQuery:
    key = (alias, vendor, skip_locked, nowait)
    if key not in _LOCK_QUERIES:
        queryset = _lock_queryset(skip_locked, nowait, UUID(int=0))
        compiler = queryset.query.get_compiler(using=alias)
        sql, _ = compiler.as_sql()
        klass = compiler.klass_info
        assert klass is not None
        assert compiler.annotation_col_map is not None
        [related] = klass["related_klass_infos"]
        expressions = [column[0] for column in compiler.select]
        _LOCK_QUERIES[key] = _LockQuery(
            sql=sql,
            converters=compiler.get_converters(expressions),
            saga_columns=list(klass["select_fields"]),
            now_column=compiler.annotation_col_map["db_now"],
            attempt_columns=list(related["select_fields"]),
        )
    return _LOCK_QUERIES[key]


_BUSY = "a step of this saga is executing right now; try again in a moment"


@contextlib.contextmanager
def operator_transaction() -> Iterator[None]:
    """Run an operator verb in a transaction that refuses instead of waiting.

    PostgreSQL refuses a locked row at once (``NOWAIT``). SQLite has no row
    locks: a worker executing a step holds the database's write lock, so the
    operator waits at most ``SAGAS_OPERATOR_LOCK_WAIT`` seconds for it, then is
    refused the same way.
    """
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        wait_ms = int(conf.get("SAGAS_OPERATOR_LOCK_WAIT") * 1000)
        connection.ensure_connection()
        previous = connection.cursor().execute("PRAGMA busy_timeout").fetchone()[0]
        connection.cursor().execute(f"PRAGMA busy_timeout = {wait_ms}")
    try:
        with transaction.atomic():
            yield
    except OperationalError as exc:
        if sqlite and "locked" in str(exc):
            raise OperatorActionRefused(_BUSY) from None
        raise
    finally:
        if sqlite:
            connection.cursor().execute(f"PRAGMA busy_timeout = {int(previous)}")


def lock_for_operator(saga_id: UUID | str) -> Saga:
    """Lock a saga for an operator verb; refuse if a step of it is executing."""
    try:
        saga = lock_saga(saga_id, nowait=True)
    except DatabaseError:
        raise OperatorActionRefused(_BUSY) from None
    if saga is None:
        raise OperatorActionRefused("no such saga")
    return saga


# --- definitions --------------------------------------------------------------


def definition_of(saga: Saga | Due) -> SagaDefinition:
    """Return the definition version the saga runs, or raise DefinitionUnavailable."""
    definition = registry.find(saga.definition, saga.version)
    if definition is None:
        raise DefinitionUnavailable(
            f"saga definition {saga.definition!r} version {saga.version} is not in "
            "this code base; deploy it again (retired=True) or move the saga to "
            "another version"
        )
    return definition


def step_of(definition: SagaDefinition, attempt: StepAttempt | Due) -> Step:
    """Return the step an attempt runs, checking that its recorded name matches.

    A definition changed in place (same version) could put another step at
    the attempt's position: that step must never run in its stead.
    """
    index = attempt.step_index
    if index < len(definition.steps) and definition.steps[index].name == attempt.step:
        return definition.steps[index]
    found = definition.steps[index].name if index < len(definition.steps) else None
    raise DefinitionUnavailable(
        f"{definition.label} has {found!r} at position {index}, but the saga's "
        f"attempt is for step {attempt.step!r}: the definition changed without a "
        "new version"
    )


# --- recording transitions ----------------------------------------------------


@dataclass
class Transition:
    """Collect one transaction's changes to a saga; write events, log on commit."""

    saga: Saga
    actor: str
    events: list[writes.Event] = field(default_factory=list)
    saga_fields: set[str] = field(default_factory=set)
    # Keep the rows until commit and write them in one statement (PostgreSQL).
    deferred: bool = False
    # Transition lines written so far, announced once the transaction commits.
    lines: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.actor = clean_text(self.actor, _ACTOR_MAX)
        self.batch = writes.Batch(self.deferred)

    def flush(self, *, saga: bool = False) -> None:
        """Write what this transition kept, before something reads it back.

        ``saga``: the saga's changes and the events so far too.
        """
        if saga:
            self._stage()
        self.batch.flush()

    def _stage(self) -> None:
        """Hand the saga's changes and the events so far to the batch."""
        if self.saga_fields:
            self.saga.updated_at = Now()  # type: ignore[assignment]
            self.batch.update(self.saga, [*sorted(self.saga_fields), "updated_at"])
            self.saga_fields = set()
        if self.events:
            self.batch.add_events(self.events)
            self.lines += _transition_lines(self.events, {self.saga.pk: self.saga})
            self.events = []

    def saga_status(self, new: str, detail: str = "") -> None:
        old = self.saga.status
        check_saga_transition(old, new)
        self.saga.status = new
        self.saga_fields.add("status")
        self._event(old, new, detail=detail)

    def attempt_status(self, attempt: StepAttempt, new: str, detail: str = "") -> None:
        old = attempt.status
        check_attempt_transition(old, new)
        attempt.status = new
        self._event(old, new, attempt=attempt, detail=detail)

    def attempt_created(self, attempt: StepAttempt, detail: str = "") -> None:
        self._event("", attempt.status, attempt=attempt, detail=detail)

    def note(self, detail: str, attempt: StepAttempt | None = None) -> None:
        """Record an event that changes no status (an operator's resume)."""
        self._event(self.saga.status, self.saga.status, attempt=attempt, detail=detail)

    def set(self, **values: Any) -> None:
        """Change saga fields other than its status."""
        if "status" in values:
            raise ValueError("use saga_status() to change a saga's status")
        for name, value in values.items():
            setattr(self.saga, name, value)
            self.saga_fields.add(name)

    def _event(
        self, old: str, new: str, *, attempt: StepAttempt | None = None, detail: str
    ) -> None:
        self.events.append(
            writes.Event(
                saga_id=self.saga.pk,
                actor=self.actor,
                step=attempt.step if attempt else "",
                kind=attempt.kind if attempt else "",
                attempt=attempt.number if attempt else None,
                old_status=old,
                new_status=new,
                detail=clean_text(detail, _DETAIL_MAX),
            )
        )

    def commit(self) -> None:
        """Write the rest; announce every transition once the transaction commits.

        Announced last: the step messages this transaction sends, and the
        hooks a definition registered, run before its log lines and signals.
        """
        self.flush(saga=True)
        if self.lines:
            lines, self.lines = self.lines, []
            transaction.on_commit(lambda: _announce(lines))


def _age(saga: Saga | Due) -> float | None:
    """Return the saga's age by the database clock, when its row says."""
    now, created = getattr(saga, "db_now", None), saga.created_at
    if now is None or not isinstance(created, datetime):
        return None
    return (now - created).total_seconds()


save_fields = writes.save_fields


def _announce_on_commit(
    events: list[writes.Event], sagas: Mapping[Any, Saga | Due]
) -> None:
    lines = _transition_lines(events, sagas)
    transaction.on_commit(lambda: _announce(lines))


def _transition_lines(
    events: list[writes.Event], sagas: Mapping[Any, Saga | Due]
) -> list[dict[str, Any]]:
    """Return what ``_announce`` logs and signals for each event."""
    ages = {pk: _age(saga) for pk, saga in sagas.items()}
    return [
        {
            "saga_id": str(event.saga_id),
            "definition": sagas[event.saga_id].definition,
            "version": sagas[event.saga_id].version,
            "step": event.step,
            "kind": event.kind,
            "attempt": event.attempt,
            "old_status": event.old_status,
            "new_status": event.new_status,
            "actor": event.actor,
            "detail": event.detail,
            "age": ages[event.saga_id],
        }
        for event in events
    ]


def _announce(lines: list[dict[str, Any]]) -> None:
    # Below INFO the transition lines would be dropped: not built at all (a
    # step announces two or three).
    info = log.isEnabledFor(logging.INFO)
    for line in lines:
        needs_operator = line["new_status"] == SagaStatus.FAILED and not line["kind"]
        if needs_operator or info:
            transition = f"{line['old_status'] or '-'} -> {line['new_status']}"
            fields = {
                k: v
                for k, v in line.items()
                if k not in ("old_status", "new_status", "age")
            }
            if needs_operator:
                log.error("saga.needs_operator", transition=transition, **fields)
            else:
                log.info("saga.transition", transition=transition, **fields)
        for receiver, response in saga_transition.send_robust(sender=Saga, **line):
            if isinstance(response, Exception):
                log.warning(
                    "saga.signal_receiver_failed",
                    receiver=repr(receiver),
                    error=repr(response),
                )


# --- attempts -----------------------------------------------------------------


def create(
    definition: SagaDefinition,
    *,
    business_key: str,
    context: dict[str, Any],
    actor: str,
) -> Saga:
    """Insert a pending saga and its first attempt (sent after commit)."""
    # The id is set here, so the first attempt can point to the saga before
    # the saga row is written (foreign keys are checked at commit).
    saga = Saga(
        definition=definition.name,
        version=definition.version,
        business_key=business_key,
        context=dict(context),
        status=SagaStatus.PENDING,
        # One trace per saga: every step's span is a child of this context.
        trace_context=tracing.saga_context(definition.name),
    )
    tx = Transition(saga, actor, deferred=True)
    tx.events.append(
        writes.Event(saga_id=saga.pk, actor=tx.actor, new_status=SagaStatus.PENDING)
    )
    advance(tx, definition, index=0, kind=AttemptKind.ACTION, number=1)
    # The saga is inserted with its first attempt already current, not
    # inserted and then updated.
    tx.batch.insert(saga)
    tx.saga_fields.clear()
    tx.commit()
    return saga


def advance(
    tx: Transition,
    definition: SagaDefinition,
    *,
    index: int,
    kind: str,
    number: int,
    try_number: int = 1,
    delay: float = 0.0,
) -> StepAttempt:
    """Create the saga's next attempt, make it current, and send it on commit."""
    step = definition.steps[index]
    attempt = StepAttempt(
        saga_id=tx.saga.pk,
        step=step.name,
        step_index=index,
        kind=kind,
        number=number,
        try_number=try_number,
    )
    if delay > conf.get("SAGAS_MAX_BROKER_COUNTDOWN"):
        # A long backoff waits in the database: a broker ETA beyond the
        # visibility timeout is delivered again and again (celery#2599).
        attempt.status = AttemptStatus.SCHEDULED
        attempt.not_before = db_in(delay)  # type: ignore[assignment]
        wake_at = db_in(delay)
    else:
        _mark_dispatched(attempt, delay=delay, timeout=step.timeout)
        wake_at = db_in(delay + lease_for(step))
    tx.batch.insert(attempt)
    tx.attempt_created(attempt, detail=f"backoff {delay:.2f}s" if delay else "")
    tx.set(current_step=index, current_attempt=attempt, wake_at=wake_at)
    if attempt.status == AttemptStatus.DISPATCHED:
        budget = budget_for(definition)
        holder = _continuation.get()
        saga_pk = tx.saga.pk
        if holder is not None and holder.saga_id == str(saga_pk) and not delay:

            def keep() -> None:
                holder.attempt_id, holder.budget = attempt.pk, budget
                holder.saga = tx.saga

            tx.batch.then(keep)
        else:
            first = index == 0 and number == 1 and kind == AttemptKind.ACTION

            def send() -> None:
                send_many_on_commit(
                    [Send(saga_pk, attempt.pk, budget, countdown=delay, first=first)]
                )

            tx.batch.then(send)
    return attempt


def _mark_dispatched(attempt: StepAttempt, *, delay: float, timeout: float) -> None:
    attempt.status = AttemptStatus.DISPATCHED
    attempt.dispatches = (attempt.dispatches or 0) + 1
    attempt.dispatched_at = db_in(0)  # type: ignore[assignment]
    attempt.not_before = db_in(delay) if delay else None  # type: ignore[assignment]
    # The deadline runs from dispatch ("schedule to close"): it also bounds a
    # message that never reached a worker.
    attempt.deadline_at = db_in(delay + timeout)  # type: ignore[assignment]


def dispatch_now(
    tx: Transition, definition: SagaDefinition, step: Step, attempt: StepAttempt
) -> None:
    """Send the current attempt now (dispatch it if scheduled, else re-send it)."""
    if attempt.status == AttemptStatus.SCHEDULED:
        tx.attempt_status(attempt, AttemptStatus.DISPATCHED)
        _mark_dispatched(attempt, delay=0, timeout=step.timeout)
        tx.batch.update(
            attempt,
            ["status", "dispatches", "dispatched_at", "not_before", "deadline_at"],
        )
    tx.set(wake_at=db_in(lease_for(step)))
    send_many_on_commit([Send(tx.saga.pk, attempt.pk, budget_for(definition))])


def finish_attempt(
    tx: Transition,
    attempt: StepAttempt,
    status: str,
    *,
    error: BaseException | None = None,
    effects_possible: bool = False,
    detail: str = "",
) -> None:
    """Close an attempt: succeeded, failed, timed out or cancelled."""
    if error is not None:
        attempt.error_type, attempt.error = error_fields(error)
        detail = detail or attempt.error
    attempt.effects_possible = effects_possible
    tx.attempt_status(attempt, status, detail=detail)
    attempt.finished_at = Now()  # type: ignore[assignment]
    tx.batch.update(
        attempt,
        [
            "status",
            "started_at",
            "finished_at",
            "error",
            "error_type",
            "result",
            "effects_possible",
        ],
    )


def skip_compensation(tx: Transition, step: Step, last: StepAttempt, note: str) -> None:
    """Record a compensation as done by hand (never run), after ``last``."""
    tx.flush()
    attempt = StepAttempt.objects.create(
        saga_id=tx.saga.pk,
        step=step.name,
        step_index=last.step_index,
        kind=AttemptKind.COMPENSATION,
        number=last.number + 1,
        status=AttemptStatus.SKIPPED,
        finished_at=Now(),
        error=clean_text(note, _ERROR_MAX),
    )
    tx.attempt_created(attempt, detail=f"done by hand: {note}")


# --- sweeping -----------------------------------------------------------------


class Due(NamedTuple):
    """A due saga as the sweeper claims it: what a re-send needs, and no model.

    Most due sagas only need their message sent again; building a saga and an
    attempt model for each cost more than the claim query. ``load_claimed``
    gives the full rows for the others.
    """

    pk: UUID
    definition: str
    version: int
    created_at: datetime
    db_now: datetime
    attempt_id: int | None
    status: str | None
    step: str
    step_index: int
    kind: str
    number: int
    deadline_at: datetime | None


_DUE_FIELDS = (
    "pk", "definition", "version", "created_at", "db_now", "current_attempt_id",
    "current_attempt__status", "current_attempt__step",
    "current_attempt__step_index", "current_attempt__kind",
    "current_attempt__number", "current_attempt__deadline_at",
)  # fmt: skip


def claim_due(limit: int) -> list[Due]:
    """Lock up to ``limit`` due active sagas, skipping locked ones."""
    rows = (
        Saga.objects.select_for_update(skip_locked=True, of=("self",))
        .annotate(db_now=Now())
        .filter(status__in=ACTIVE_SAGA_STATUSES, wake_at__lte=Now())
        .order_by("wake_at")
        .values_list(*_DUE_FIELDS)[:limit]
    )
    return [Due(*row) for row in rows]


def load_claimed(claimed: Sequence[Due]) -> list[Saga]:
    """Return the full rows of sagas this transaction claimed, in claim order."""
    if not claimed:
        return []
    found = Saga.objects.select_related("current_attempt").in_bulk(
        [due.pk for due in claimed]
    )
    sagas = []
    for due in claimed:
        saga = found[due.pk]
        saga.db_now = due.db_now  # type: ignore[attr-defined]
        sagas.append(saga)
    return sagas


def resend(sagas: Sequence[tuple[Due, SagaDefinition, Step]]) -> list[Due]:
    """Dispatch due backoffs and re-send lapsed leases, set-based; return the rest.

    Neither counts as progress, so ``updated_at`` (what "stuck" looks at) stays.
    The rest (overdue attempts, sagas without one) take the full path.
    """
    lease = conf.get("SAGAS_DISPATCH_LEASE")
    rest: list[Due] = []
    redispatches: list[writes.Redispatch] = []
    events: list[writes.Event] = []
    sends: list[Send] = []
    now: Any = None
    for due, definition, step in sagas:
        now = due.db_now
        if due.status == AttemptStatus.SCHEDULED:
            check_attempt_transition(due.status, AttemptStatus.DISPATCHED)
            new, detail = str(AttemptStatus.DISPATCHED), ""
        elif (
            due.status == AttemptStatus.DISPATCHED
            and due.deadline_at is not None
            and due.deadline_at > now
        ):
            new, detail = due.status, "re-sent: not finished within the lease"
        else:
            rest.append(due)
            continue
        assert due.attempt_id is not None
        scheduled = new != due.status
        deadline = (
            now + timedelta(seconds=step.timeout) if scheduled else due.deadline_at
        )
        assert deadline is not None
        redispatches.append(
            writes.Redispatch(
                due.pk,
                due.attempt_id,
                scheduled,
                new,
                deadline,
                # Again at the end of the lease, or at the deadline if sooner.
                min(now + timedelta(seconds=lease), deadline),
            )
        )
        events.append(
            writes.Event(
                saga_id=due.pk,
                actor=SWEEPER,
                step=due.step,
                kind=due.kind,
                attempt=due.number,
                old_status=due.status,
                new_status=new,
                detail=detail,
            )
        )
        sends.append(Send(due.pk, due.attempt_id, budget_for(definition)))
    if sends:
        if not writes.redispatch(redispatches, events, now=now):
            _redispatch_with_orm(redispatches, events, now)
        _announce_on_commit(events, {due.pk: due for due, _, _ in sagas})
        send_many_on_commit(sends)
    return rest


def _redispatch_with_orm(
    rows: Sequence[writes.Redispatch], events: Sequence[writes.Event], now: datetime
) -> None:
    """``writes.redispatch`` on other databases: a few set-based statements."""
    StepAttempt.objects.filter(pk__in=[row.attempt_id for row in rows]).update(
        dispatches=F("dispatches") + 1
    )
    due = [row for row in rows if row.due]
    if due:
        StepAttempt.objects.filter(pk__in=[row.attempt_id for row in due]).update(
            status=AttemptStatus.DISPATCHED,
            dispatched_at=now,
            not_before=None,
            deadline_at=_by_pk(due, "attempt_id", "deadline"),
        )
    Saga.objects.filter(pk__in=[row.saga_id for row in rows]).update(
        wake_at=_by_pk(rows, "saga_id", "wake")
    )
    writes.insert_events(events)


def _by_pk(rows: Sequence[writes.Redispatch], key: str, value: str) -> Case:
    """A value per row, chosen by primary key."""
    return Case(
        *[When(pk=getattr(row, key), then=Value(getattr(row, value))) for row in rows],
        output_field=models.DateTimeField(),
    )


def postpone(saga: Saga, seconds: float) -> None:
    """Move a saga's wake-up ``seconds`` ahead (it could not be handled now)."""
    Saga.objects.filter(pk=saga.pk).update(wake_at=db_in(seconds))


# --- what an outcome means ------------------------------------------------------


def start_running(tx: Transition) -> None:
    """Mark a pending saga running: its first step is being executed."""
    if tx.saga.status == SagaStatus.PENDING:
        tx.saga_status(SagaStatus.RUNNING)


def park_after(
    tx: Transition,
    definition: SagaDefinition,
    attempt: StepAttempt,
    exc: BaseException,
    during: BaseException,
) -> None:
    """Record a failed attempt whose ordinary recording failed, and park the saga."""
    action = attempt.kind == AttemptKind.ACTION
    finish_attempt(
        tx, attempt, AttemptStatus.FAILED, error=exc, effects_possible=action
    )
    kind, message = error_fields(during)
    if action:
        tx.set(failed_step=attempt.step, error=attempt.error)
    tx.set(
        last_error=f"{attempt.step} {attempt.kind}: {attempt.error}; "
        f"recording it raised {kind}: {message}"
    )
    park(tx, definition)


def policy_for(step: Step, kind: str) -> RetryPolicy:
    """Return the retry policy of a step's action, or the one every compensation has."""
    return step.retry if kind == AttemptKind.ACTION else conf.compensation_policy()


def continue_after(
    tx: Transition, definition: SagaDefinition, attempt: StepAttempt
) -> None:
    """Go on from a succeeded attempt: next step, next compensation, or the end."""
    if attempt.kind == AttemptKind.COMPENSATION:
        compensate_next(tx, definition)
    elif attempt.step_index + 1 < len(definition.steps):
        advance(
            tx,
            definition,
            index=attempt.step_index + 1,
            kind=AttemptKind.ACTION,
            number=1,
        )
    else:
        end(tx, definition, SagaStatus.COMPLETED)


def record_failure(
    tx: Transition,
    definition: SagaDefinition,
    attempt: StepAttempt,
    exc: BaseException,
    *,
    after_return: bool = False,
) -> None:
    """Record a failed attempt and decide: retry, compensate, or park.

    ``after_return``: the action returned, then something failed (its result,
    a hook, writing the record), so its effects may well have happened.
    """
    step = definition.steps[attempt.step_index]
    policy = policy_for(step, attempt.kind)
    timed_out = isinstance(exc, StepTimedOut)
    poison = isinstance(exc, PoisonMessage)
    compensation = attempt.kind == AttemptKind.COMPENSATION
    # Compensations must succeed: every error is worth another attempt.
    transient = timed_out or compensation or policy.is_transient(exc)
    effects = (
        after_return or transient or poison or bool(getattr(exc, "partial", False))
    )
    finish_attempt(
        tx,
        attempt,
        AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.FAILED,
        error=exc,
        effects_possible=effects and not compensation,
    )
    message = attempt.error
    retriable = step.kind is StepKind.RETRIABLE and not compensation
    next_try = attempt.try_number + 1
    if not poison and (
        (transient and policy.allows(next_try))
        # A retriable step cannot be compensated: a programming error there
        # is retried a bounded number of times, then parked with its error.
        or (
            retriable
            and not transient
            and next_try <= conf.get("SAGAS_RETRIABLE_MAX_ERRORS")
        )
    ):
        advance(
            tx,
            definition,
            index=attempt.step_index,
            kind=attempt.kind,
            number=attempt.number + 1,
            try_number=next_try,
            delay=policy.delay(next_try),
        )
        return
    tx.set(last_error=f"{step.name} {attempt.kind}: {message}")
    if compensation:
        park(tx, definition)
        return
    tx.set(failed_step=step.name, error=message)
    if retriable:
        park(tx, definition)
        return
    if step.kind is StepKind.PIVOT and _effects_possible(tx, step.name):
        # Past the point of no return, or not: only a person can tell.
        tx.set(
            last_error=f"{step.name}: the pivot's outcome is unknown ({message}); "
            "check whether it took effect, then retry or resolve"
        )
        park(tx, definition)
        return
    tx.saga_status(SagaStatus.COMPENSATING, detail=f"{step.name}: {message}")
    compensate_next(tx, definition)


def _effects_possible(tx: Transition, step: str) -> bool:
    tx.flush()
    return StepAttempt.objects.filter(
        Q(status=AttemptStatus.SUCCEEDED) | Q(effects_possible=True),
        saga_id=tx.saga.pk,
        step=step,
        kind=AttemptKind.ACTION,
    ).exists()


def compensate_next(tx: Transition, definition: SagaDefinition) -> None:
    """Compensate the last step that may have had effects and is not yet undone.

    Steps are undone in strict reverse order, each once: a step counts when
    any attempt of its action succeeded or may have had effects.
    """
    tx.flush()
    rows = StepAttempt.objects.filter(saga_id=tx.saga.pk).values_list(
        "step", "kind", "status", "effects_possible"
    )
    touched: set[str] = set()
    undone: set[str] = set()
    for name, kind, status, effects in rows:
        if kind == AttemptKind.ACTION and (
            effects or status == AttemptStatus.SUCCEEDED
        ):
            touched.add(name)
        elif kind == AttemptKind.COMPENSATION and status in (
            AttemptStatus.SUCCEEDED,
            AttemptStatus.SKIPPED,
        ):
            undone.add(name)
    for index in range(len(definition.steps) - 1, -1, -1):
        step = definition.steps[index]
        if step.compensation is None or step.name not in touched - undone:
            continue
        previous = (
            StepAttempt.objects.filter(
                saga_id=tx.saga.pk, step=step.name, kind=AttemptKind.COMPENSATION
            )
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
        )
        advance(
            tx,
            definition,
            index=index,
            kind=AttemptKind.COMPENSATION,
            number=(previous or 0) + 1,
        )
        return
    end(tx, definition, SagaStatus.COMPENSATED)


def outcome(
    saga: Saga, status: str, note: str = "", *, compensating: bool | None = None
) -> SagaOutcome:
    """Return what a definition's hooks receive about ``saga``.

    ``compensating`` defaults to whether the saga is compensating now.
    """
    return SagaOutcome(
        saga_id=saga.pk,
        business_key=saga.business_key,
        data=dict(saga.context),
        failed_step=saga.failed_step,
        error=saga.error,
        status=status,
        compensating=saga.status == SagaStatus.COMPENSATING
        if compensating is None
        else compensating,
        note=note,
    )


def end(tx: Transition, definition: SagaDefinition, status: str) -> None:
    """End the saga completed or compensated, running the definition's hook.

    The hook runs in this transaction, so business rows change with the saga.
    If it raises, the end is not recorded: the caller's transaction rolls back
    and the failure is recorded on the attempt that led here.
    """
    hook = (
        definition.on_completed
        if status == SagaStatus.COMPLETED
        else definition.on_compensated
    )
    if hook is None:
        tx.saga_status(status)
        _close(tx)
        return
    # What the hook is told: the saga as it was (its context not yet scrubbed).
    told = outcome(tx.saga, status)
    tx.saga_status(status)
    _close(tx)
    # The hook may read the engine's rows: the attempt and the saga's end are
    # written (one statement) before it runs.
    tx.flush(saga=True)
    hook(told)


def park(tx: Transition, definition: SagaDefinition | None) -> None:
    """Stop the saga for an operator; ``last_error`` says why.

    ``on_failed`` runs in a savepoint: if it raises, the saga is parked anyway
    and the hook's error is added to ``last_error``.
    """
    hook = definition.on_failed if definition is not None else None
    if hook is not None:
        tx.flush()
        try:
            with transaction.atomic():
                hook(outcome(tx.saga, SagaStatus.FAILED))
        except Exception as exc:
            kind, message = error_fields(exc)
            tx.set(
                last_error=f"{tx.saga.last_error}; on_failed raised {kind}: {message}"
            )
    tx.set(wake_at=None)
    tx.saga_status(SagaStatus.FAILED, detail=tx.saga.last_error)


def park_unavailable(tx: Transition, error: DefinitionUnavailable) -> None:
    """Park a saga whose definition version or step is not in the code base."""
    attempt = tx.saga.current_attempt
    if attempt is not None and attempt.status in OPEN_ATTEMPT_STATUSES:
        finish_attempt(tx, attempt, AttemptStatus.CANCELLED, error=error)
    tx.set(last_error=str(error))
    definition = registry.find(tx.saga.definition, tx.saga.version)
    park(tx, definition)


def resolve(tx: Transition, definition: SagaDefinition | None, note: str) -> None:
    """Close a parked saga by hand; ``on_resolved`` runs in this transaction."""
    if definition is not None and definition.on_resolved is not None:
        tx.flush()
        saga = tx.saga
        definition.on_resolved(
            outcome(
                saga,
                SagaStatus.RESOLVED,
                note,
                compensating=_was_compensating(saga),
            )
        )
    tx.saga_status(SagaStatus.RESOLVED, detail=f"resolved: {note}")
    _close(tx)


def _was_compensating(saga: Saga) -> bool:
    return (
        StepAttempt.objects.filter(
            saga_id=saga.pk, kind=AttemptKind.COMPENSATION
        ).exists()
        or SagaEvent.objects.filter(
            saga_id=saga.pk, kind="", new_status=SagaStatus.COMPENSATING
        ).exists()
    )


def _close(tx: Transition) -> None:
    tx.set(current_attempt=None, wake_at=None, finished_at=Now())
    # A finished saga runs no step again: drop the secrets its steps needed.
    tx.set(context=scrubbed_context(tx.saga.definition, tx.saga.context))


# --- waiting for the outside world ----------------------------------------------


def step_context(saga: Saga, step: Step, attempt: StepAttempt) -> StepContext:
    """Return what the attempt's function receives (or its command carries)."""
    return StepContext(
        saga_id=saga.pk,
        business_key=saga.business_key,
        step=step.name,
        kind=attempt.kind,
        attempt=attempt.number,
        data=dict(saga.context),
    )


def function_of(step: Step, attempt: StepAttempt) -> Any:
    """Return the attempt's function: the step's action or its compensation."""
    return step.action if attempt.kind == AttemptKind.ACTION else step.compensation


def wait_outside(
    tx: Transition, step: Step, attempt: StepAttempt, function: Remote | Wait
) -> None:
    """Leave the attempt waiting for a reply, an event or a person; hold nothing.

    A remote command leaves once this transaction commits and is sent again
    whenever its lease lapses before a reply, until the step's deadline.
    """
    tx.attempt_status(
        attempt,
        AttemptStatus.WAITING,
        detail=f"command {function.task}" if isinstance(function, Remote) else "",
    )
    tx.batch.update(attempt, ["status", "started_at"])
    if isinstance(function, Remote):
        _send_command(tx, step, attempt, function)
    else:
        tx.set(wake_at=attempt.deadline_at)


def _send_command(
    tx: Transition, step: Step, attempt: StepAttempt, function: Remote
) -> None:
    context = step_context(tx.saga, step, attempt)
    send_command_on_commit(
        function.task,
        function.queue,
        function.command(context, attempt_id=attempt.pk, reply_task=REPLY_TASK),
    )
    tx.set(
        wake_at=Least(db_in(lease_for(step)), Value(attempt.deadline_at))
        if attempt.deadline_at is not None
        else db_in(lease_for(step))
    )


def resend_command(tx: Transition, step: Step, attempt: StepAttempt) -> None:
    """Send a waiting remote attempt's command again (no reply within the lease)."""
    function = function_of(step, attempt)
    assert isinstance(function, Remote)
    tx.note("re-sent command: no reply within the lease", attempt=attempt)
    _send_command(tx, step, attempt, function)


def validated_result(
    result: Any, context: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """Return a step's result as new context values, or raise StepResultError."""
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        raise StepResultError(
            f"a step returns a mapping or None, not {type(result).__name__}"
        )
    values = dict(result)
    keys = [key for key in values if not isinstance(key, str)]
    if keys:
        raise StepResultError(f"result keys must be strings, not {keys[:5]!r}")
    try:
        text = json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepResultError(f"result is not JSON: {exc}") from exc
    if "\\u0000" in text:
        raise StepResultError("result contains a NUL character")
    if kind == AttemptKind.ACTION:
        clashes = sorted(
            key
            for key, value in values.items()
            if key in context and context[key] != value
        )
        if clashes:
            raise StepResultError(
                f"result would overwrite context keys {clashes}: return new keys"
            )
    return values


def succeed(
    tx: Transition,
    definition: SagaDefinition,
    attempt: StepAttempt,
    result: Any,
) -> None:
    """Record a succeeded attempt, keep its result, and go on."""
    values = validated_result(result, tx.saga.context, attempt.kind)
    attempt.result = values or None
    finish_attempt(tx, attempt, AttemptStatus.SUCCEEDED)
    if values and attempt.kind == AttemptKind.ACTION:
        tx.set(context={**tx.saga.context, **values})
    continue_after(tx, definition, attempt)


def wait_expired(
    tx: Transition, definition: SagaDefinition, step: Step, attempt: StepAttempt
) -> None:
    """Fail an attempt past its deadline, or escalate a wait step that says so."""
    function = function_of(step, attempt)
    if isinstance(function, Wait):
        # Waiting again would not help: nobody completed the step in time. A
        # wait changes nothing itself, so only the steps before it are undone.
        finish_attempt(
            tx,
            attempt,
            AttemptStatus.TIMED_OUT,
            error=StepTimedOut(f"nothing completed {step.name} within {step.timeout}s"),
        )
        tx.set(failed_step=step.name, error=attempt.error)
        if function.on_timeout is WaitTimeout.ESCALATE:
            tx.set(last_error=f"{step.name}: escalated, {attempt.error}")
            park(tx, definition)
            return
        tx.saga_status(SagaStatus.COMPENSATING, detail=f"{step.name}: {attempt.error}")
        compensate_next(tx, definition)
        return
    record_failure(
        tx, definition, attempt, StepTimedOut(f"no result within {step.timeout}s")
    )
