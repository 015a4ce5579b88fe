"""The only code that changes a saga's or a step attempt's status.

Every change goes through the transition tables in ``sagas.states``, is written
as a ``SagaEvent`` in the same transaction, and is logged once committed.

Concurrency: a worker executing a step holds the saga row lock for the whole
step (action included), so a duplicate message waits, then finds its attempt
superseded and does nothing; sweepers skip locked rows, which is how they tell
a step being executed from a step whose worker or message was lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, models, transaction
from django.db.models import F, Value
from django.db.models.expressions import CombinedExpression, ExpressionWrapper, RawSQL
from django.db.models.functions import Least, Now

from sagas import conf, registry
from sagas.definition import (
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
)
from sagas.dispatch import send_many_on_commit, send_on_commit
from sagas.errors import DefinitionError, IllegalTransition, OperatorActionRefused
from sagas.models import Saga, SagaEvent, StepAttempt
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


def _db_in(seconds: float) -> ExpressionWrapper:
    """Return "database now + seconds": deadlines never trust a worker's clock."""
    expression: CombinedExpression | Now = Now()
    if seconds:
        expression = Now() + timedelta(seconds=seconds)
    return ExpressionWrapper(expression, output_field=models.DateTimeField())


class PoisonMessage(Exception):
    """A step message crashed its worker more often than allowed."""


class StepTimedOut(Exception):
    """A step ran past its deadline; its effects are unknown."""


@dataclass
class _Transaction:
    """Collect one transaction's changes to a saga; write events, log on commit."""

    saga: Saga
    actor: str
    events: list[SagaEvent] = field(default_factory=list)
    saga_fields: set[str] = field(default_factory=set)

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
        for name, value in values.items():
            setattr(self.saga, name, value)
            self.saga_fields.add(name)

    def _event(
        self, old: str, new: str, *, attempt: StepAttempt | None = None, detail: str
    ) -> None:
        self.events.append(
            SagaEvent(
                saga_id=self.saga.pk,
                actor=self.actor,
                step=attempt.step if attempt else "",
                kind=attempt.kind if attempt else "",
                attempt=attempt.number if attempt else None,
                old_status=old,
                new_status=new,
                detail=detail[:2000],
            )
        )

    def commit(self) -> None:
        if self.saga_fields:
            self.saga.updated_at = Now()  # type: ignore[assignment]
            self.saga.save(update_fields=[*sorted(self.saga_fields), "updated_at"])
        _write_events(self.events, {self.saga.pk: self.saga.definition})


def _write_events(events: list[SagaEvent], definitions: dict[Any, str]) -> None:
    """Insert events; log one structured line for each once committed."""
    SagaEvent.objects.bulk_create(events)
    lines = [
        {
            "saga_id": str(event.saga_id),
            "definition": definitions[event.saga_id],
            "step": event.step,
            "kind": event.kind,
            "attempt": event.attempt,
            "transition": f"{event.old_status or '-'} -> {event.new_status}",
            "actor": event.actor,
            "detail": event.detail,
        }
        for event in events
    ]
    transaction.on_commit(lambda: _log_transitions(lines))


def _log_transitions(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        if line["transition"].endswith(f"-> {SagaStatus.FAILED}") and not line["kind"]:
            log.error("saga.needs_operator", **line)
        else:
            log.info("saga.transition", **line)


# --- starting -----------------------------------------------------------------


def saga_start(
    definition: str | SagaDefinition,
    *,
    business_key: str,
    context: dict[str, Any] | None = None,
    actor: str = ENGINE,
) -> Saga:
    """Create a saga and its first attempt; send the first step after commit.

    Call it inside the transaction that writes your business rows: they commit
    together, and if the message is lost after commit the sweeper re-sends it.
    """
    if isinstance(definition, str):
        definition = registry.get(definition)
    with transaction.atomic(savepoint=False):
        saga = Saga(
            definition=definition.name,
            version=definition.version,
            business_key=business_key,
            context=dict(context or {}),
            status=SagaStatus.PENDING,
        )
        saga.save(force_insert=True)
        tx = _Transaction(saga, actor)
        tx.events.append(
            SagaEvent(saga_id=saga.pk, actor=actor, new_status=SagaStatus.PENDING)
        )
        _advance(tx, definition, index=0, kind=AttemptKind.ACTION, number=1)
        tx.commit()
    return saga


def _advance(
    tx: _Transaction,
    definition: SagaDefinition,
    *,
    index: int,
    kind: str,
    number: int,
    delay: float = 0.0,
) -> StepAttempt:
    """Create the saga's next attempt and make it current."""
    step = definition.step(index)
    lease = min(conf.get("SAGAS_DISPATCH_LEASE"), step.timeout)
    attempt = StepAttempt(
        saga_id=tx.saga.pk,
        step=step.name,
        step_index=index,
        kind=kind,
        number=number,
    )
    if delay > conf.get("SAGAS_MAX_BROKER_COUNTDOWN"):
        # A long backoff waits in the database: a broker ETA beyond the
        # visibility timeout is delivered again and again (celery#2599).
        attempt.status = AttemptStatus.SCHEDULED
        attempt.not_before = _db_in(delay)  # type: ignore[assignment]
        wake_at = _db_in(delay)
    else:
        _mark_dispatched(attempt, delay=delay, timeout=step.timeout)
        wake_at = _db_in(delay + lease)
    attempt.save(force_insert=True)
    tx.attempt_created(attempt, detail=f"backoff {delay:.2f}s" if delay else "")
    tx.set(current_step=index, current_attempt=attempt, wake_at=wake_at)
    if attempt.status == AttemptStatus.DISPATCHED:
        send_on_commit(
            tx.saga.pk,
            attempt.pk,
            timeout=step.timeout,
            countdown=delay,
            first=index == 0 and number == 1 and kind == AttemptKind.ACTION,
        )
    return attempt


def _mark_dispatched(attempt: StepAttempt, *, delay: float, timeout: float) -> None:
    attempt.status = AttemptStatus.DISPATCHED
    attempt.dispatches = (attempt.dispatches or 0) + 1
    attempt.dispatched_at = _db_in(0)  # type: ignore[assignment]
    attempt.not_before = _db_in(delay) if delay else None  # type: ignore[assignment]
    # The deadline runs from dispatch ("schedule to close"): it also bounds a
    # message that never reached a worker.
    attempt.deadline_at = _db_in(delay + timeout)  # type: ignore[assignment]


# --- executing ----------------------------------------------------------------


def step_execute(
    saga_id: UUID | str, attempt_id: int, *, redelivered: bool = False
) -> str:
    """Run one step action or compensation; return what happened, for logs.

    A message for an attempt that is no longer the saga's current one, or that
    is no longer dispatched, changes nothing ("fenced").
    """
    if redelivered and _count_delivery(attempt_id) > conf.get("SAGAS_MAX_DELIVERIES"):
        return _park_poison(saga_id, attempt_id)
    try:
        with transaction.atomic():
            claimed = _claim(saga_id, attempt_id)
            if claimed is None:
                return "fenced"
            tx, definition, attempt = claimed
            step = definition.step(attempt.step_index)
            function = (
                step.action if attempt.kind == AttemptKind.ACTION else step.compensation
            )
            assert function is not None
            context = StepContext(
                saga_id=tx.saga.pk,
                business_key=tx.saga.business_key,
                step=step.name,
                kind=attempt.kind,
                attempt=attempt.number,
                data=dict(tx.saga.context),
            )
            try:
                # The action's own writes commit with the step's record, or not
                # at all: no savepoint, a failure rolls the whole step back.
                result = function(context)
            except Exception as exc:
                raise _ActionFailed(exc, attempt.started_at) from exc
            _succeed(tx, definition, attempt, dict(result or {}))
            tx.commit()
    except _ActionFailed as failed:
        return _record_failure(saga_id, attempt_id, failed)
    return "succeeded"


class _ActionFailed(Exception):
    def __init__(self, exc: Exception, started_at: Any) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.started_at = started_at


def _claim(
    saga_id: UUID | str, attempt_id: int
) -> tuple[_Transaction, SagaDefinition, StepAttempt] | None:
    """Lock the saga; return it ready to change, or None if the message is stale."""
    saga = (
        Saga.objects.select_for_update(of=("self",))
        .select_related("current_attempt")
        .annotate(db_now=Now())
        .filter(pk=saga_id)
        .first()
    )
    if saga is None or not _is_current(saga, attempt_id):
        return None
    attempt = saga.current_attempt
    assert attempt is not None
    tx = _Transaction(saga, ENGINE)
    if saga.status == SagaStatus.PENDING:
        tx.saga_status(SagaStatus.RUNNING)
    attempt.started_at = saga.db_now  # type: ignore[attr-defined]
    return tx, registry.get(saga.definition), attempt


def _record_failure(saga_id: UUID | str, attempt_id: int, failed: _ActionFailed) -> str:
    """Record a failed action in a new transaction, if its attempt is still current.

    A duplicate delivery may have recorded it meanwhile: then this is fenced.
    """
    with transaction.atomic():
        claimed = _claim(saga_id, attempt_id)
        if claimed is None:
            return "fenced"
        tx, definition, attempt = claimed
        attempt.started_at = failed.started_at
        exc: BaseException = failed.exc
        if isinstance(exc, SoftTimeLimitExceeded):
            timeout = definition.step(attempt.step_index).timeout
            exc = StepTimedOut(f"ran past {timeout}s")
        _fail(tx, definition, attempt, exc)
        tx.commit()
    return "timed_out" if isinstance(exc, StepTimedOut) else "failed"


def _is_current(saga: Saga, attempt_id: int) -> bool:
    return (
        saga.status in ACTIVE_SAGA_STATUSES
        and saga.current_attempt_id == attempt_id
        and saga.current_attempt is not None
        and saga.current_attempt.status == AttemptStatus.DISPATCHED
    )


def _finish_attempt(
    tx: _Transaction, attempt: StepAttempt, status: str, detail: str = ""
) -> None:
    tx.attempt_status(attempt, status, detail=detail)
    attempt.finished_at = Now()  # type: ignore[assignment]
    attempt.save(
        update_fields=[
            "status",
            "started_at",
            "finished_at",
            "error",
            "error_type",
            "result",
        ]
    )


def _succeed(
    tx: _Transaction,
    definition: SagaDefinition,
    attempt: StepAttempt,
    result: dict[str, Any],
) -> None:
    attempt.result = result or None
    _finish_attempt(tx, attempt, AttemptStatus.SUCCEEDED)
    if result:
        tx.set(context={**tx.saga.context, **result})
    if attempt.kind == AttemptKind.COMPENSATION:
        _compensate_from(tx, definition, attempt.step_index - 1)
    elif attempt.step_index + 1 < len(definition.steps):
        _advance(
            tx,
            definition,
            index=attempt.step_index + 1,
            kind=AttemptKind.ACTION,
            number=1,
        )
    else:
        tx.saga_status(SagaStatus.COMPLETED)
        _close(tx)
        _run_hook(definition.on_completed, tx.saga)


def _policy(step: Step, kind: str) -> RetryPolicy:
    return step.retry if kind == AttemptKind.ACTION else conf.compensation_policy()


def _fail(
    tx: _Transaction,
    definition: SagaDefinition,
    attempt: StepAttempt,
    exc: BaseException,
    *,
    status: str = AttemptStatus.FAILED,
) -> None:
    """Record a failed attempt and decide: retry, compensate, or park."""
    step = definition.step(attempt.step_index)
    policy = _policy(step, attempt.kind)
    timed_out = isinstance(exc, StepTimedOut)
    if timed_out:
        status = AttemptStatus.TIMED_OUT
    message = str(exc) or type(exc).__name__
    attempt.error = message
    attempt.error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    _finish_attempt(tx, attempt, status, detail=message)
    transient = timed_out or policy.is_transient(exc)
    if (
        transient
        and not isinstance(exc, PoisonMessage)
        and policy.allows(attempt.number + 1)
    ):
        _advance(
            tx,
            definition,
            index=attempt.step_index,
            kind=attempt.kind,
            number=attempt.number + 1,
            delay=policy.delay(attempt.number + 1),
        )
        return
    tx.set(last_error=f"{step.name} {attempt.kind}: {message}")
    if attempt.kind == AttemptKind.ACTION and step.kind is StepKind.RETRIABLE:
        tx.set(failed_step=step.name, error=message)
    if attempt.kind == AttemptKind.COMPENSATION or step.kind is StepKind.RETRIABLE:
        _park(tx, definition)
        return
    tx.set(failed_step=step.name, error=message)
    tx.saga_status(SagaStatus.COMPENSATING, detail=f"{step.name}: {message}")
    # A step that timed out, crashed or kept failing transiently may have done
    # part of its work: undo it too. A clean permanent failure changed nothing.
    uncertain = (
        transient or isinstance(exc, PoisonMessage) or getattr(exc, "partial", False)
    )
    _compensate_from(
        tx, definition, attempt.step_index if uncertain else attempt.step_index - 1
    )


def _compensate_from(tx: _Transaction, definition: SagaDefinition, index: int) -> None:
    """Compensate the nearest compensatable step at or before ``index``."""
    for candidate in range(index, -1, -1):
        if definition.step(candidate).compensation is not None:
            _advance(
                tx, definition, index=candidate, kind=AttemptKind.COMPENSATION, number=1
            )
            return
    tx.saga_status(SagaStatus.COMPENSATED)
    _close(tx)
    _run_hook(definition.on_compensated, tx.saga)


def _park(tx: _Transaction, definition: SagaDefinition) -> None:
    """Stop the saga for an operator; ``last_error`` says why."""
    tx.set(wake_at=None)
    tx.saga_status(SagaStatus.FAILED, detail=tx.saga.last_error)
    _run_hook(definition.on_failed, tx.saga)


def _close(tx: _Transaction) -> None:
    tx.set(current_attempt=None, wake_at=None, finished_at=Now())


def _run_hook(hook: Any, saga: Saga) -> None:
    if hook is None:
        return
    hook(
        SagaOutcome(
            saga_id=saga.pk,
            business_key=saga.business_key,
            data=dict(saga.context),
            failed_step=saga.failed_step,
            error=saga.error,
        )
    )


# --- poison messages ----------------------------------------------------------


def _count_delivery(attempt_id: int) -> int:
    """Count a redelivery in its own transaction, so a crash cannot roll it back."""
    with transaction.atomic():
        StepAttempt.objects.filter(pk=attempt_id).update(deliveries=F("deliveries") + 1)
        deliveries = (
            StepAttempt.objects.filter(pk=attempt_id)
            .values_list("deliveries", flat=True)
            .first()
        )
    return deliveries or 0


def _park_poison(saga_id: UUID | str, attempt_id: int) -> str:
    with transaction.atomic():
        claimed = _claim(saga_id, attempt_id)
        if claimed is None:
            return "fenced"
        tx, definition, attempt = claimed
        exc = PoisonMessage(f"crashed its worker {attempt.deliveries - 1} times")
        _fail(tx, definition, attempt, exc)
        tx.commit()
    return "poison"


# --- sweeping -----------------------------------------------------------------


def sweep(*, batch: int | None = None) -> int:
    """Handle sagas whose wake-up time has come; return how many were handled.

    Dispatch attempts whose backoff is over, re-send attempts whose message was
    not picked up within the lease, and time out attempts past their deadline.
    Rows locked by a worker executing a step are skipped, so any number of
    sweepers may run at once.
    """
    # A bounded batch keeps the transaction short; the next beat tick takes the rest.
    limit = batch or int(conf.get("SAGAS_SWEEP_BATCH"))
    with transaction.atomic():
        sagas = list(
            Saga.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("current_attempt")
            .annotate(db_now=Now())
            .filter(status__in=ACTIVE_SAGA_STATUSES, wake_at__lte=Now())
            .order_by("wake_at")[:limit]
        )
        # Re-sends and due backoffs, the bulk of the work, are written for the
        # whole batch at once; timeouts take the engine's full failure path.
        rest = _send_again(sagas)
        for saga in rest:
            try:
                with transaction.atomic():
                    _wake(saga)
            except Exception:
                log.exception("sweep.saga_failed", saga_id=str(saga.pk))
    return len(sagas)


def _send_again(sagas: Sequence[Saga]) -> list[Saga]:
    """Dispatch due backoffs and re-send lapsed leases, set-based; return the rest.

    Neither counts as progress, so ``updated_at`` (what "stuck" looks at) stays.
    """
    lease = conf.get("SAGAS_DISPATCH_LEASE")
    rest: list[Saga] = []
    # Due backoffs grouped by step timeout (their new deadline); lapsed leases.
    due: dict[float, list[tuple[Saga, StepAttempt]]] = defaultdict(list)
    lapsed: list[tuple[Saga, StepAttempt]] = []
    events: list[SagaEvent] = []
    sends: list[tuple[UUID, int, float]] = []
    now: Any = None
    for saga in sagas:
        now = saga.db_now  # type: ignore[attr-defined]
        attempt = saga.current_attempt
        timeout = _step_timeout(saga, attempt)
        if attempt is None or timeout is None:
            rest.append(saga)
            continue
        if attempt.status == AttemptStatus.SCHEDULED:
            check_attempt_transition(attempt.status, AttemptStatus.DISPATCHED)
            due[timeout].append((saga, attempt))
            new, detail = str(AttemptStatus.DISPATCHED), ""
        elif attempt.status == AttemptStatus.DISPATCHED and attempt.deadline_at > now:
            lapsed.append((saga, attempt))
            new, detail = attempt.status, "re-sent: not finished within the lease"
        else:
            rest.append(saga)
            continue
        events.append(
            SagaEvent(
                saga_id=saga.pk,
                actor=SWEEPER,
                step=attempt.step,
                kind=attempt.kind,
                attempt=attempt.number,
                old_status=attempt.status,
                new_status=new,
                detail=detail,
            )
        )
        sends.append((saga.pk, attempt.pk, timeout))
    for timeout, pairs in due.items():
        StepAttempt.objects.filter(pk__in=[a.pk for _, a in pairs]).update(
            status=AttemptStatus.DISPATCHED,
            dispatches=F("dispatches") + 1,
            dispatched_at=now,
            not_before=None,
            deadline_at=now + timedelta(seconds=timeout),
        )
        Saga.objects.filter(pk__in=[s.pk for s, _ in pairs]).update(
            wake_at=now + timedelta(seconds=min(lease, timeout))
        )
    if lapsed:
        StepAttempt.objects.filter(pk__in=[a.pk for _, a in lapsed]).update(
            dispatches=F("dispatches") + 1
        )
        Saga.objects.filter(pk__in=[s.pk for s, _ in lapsed]).update(
            wake_at=Least(Value(now + timedelta(seconds=lease)), _CURRENT_DEADLINE)
        )
    if sends:
        _write_events(events, {saga.pk: saga.definition for saga in sagas})
        send_many_on_commit(sends)
    return rest


# A correlated subquery written out: the ORM's OuterRef form makes PostgreSQL
# join the whole saga table (a sequential scan over finished sagas too).
_CURRENT_DEADLINE = RawSQL(
    f"(SELECT a.deadline_at FROM {StepAttempt._meta.db_table} a"
    f" WHERE a.id = {Saga._meta.db_table}.current_attempt_id)",
    (),
    output_field=models.DateTimeField(),
)


def _step_timeout(saga: Saga, attempt: StepAttempt | None) -> float | None:
    if attempt is None:
        return None
    try:
        return registry.get(saga.definition).step(attempt.step_index).timeout
    except (DefinitionError, IndexError):
        return None


def _wake(saga: Saga) -> None:
    """Time out an overdue attempt (what ``_send_again`` leaves to the full path)."""
    attempt = saga.current_attempt
    tx = _Transaction(saga, SWEEPER)
    if attempt is None:
        tx.set(wake_at=None)
    else:
        definition = registry.get(saga.definition)
        if saga.status == SagaStatus.PENDING:
            tx.saga_status(SagaStatus.RUNNING)
        step = definition.step(attempt.step_index)
        timed_out = StepTimedOut(f"no result within {step.timeout}s")
        _fail(tx, definition, attempt, timed_out)
    tx.commit()


def _dispatch_now(
    tx: _Transaction, definition: SagaDefinition, attempt: StepAttempt
) -> None:
    step = definition.step(attempt.step_index)
    tx.attempt_status(attempt, AttemptStatus.DISPATCHED)
    _mark_dispatched(attempt, delay=0, timeout=step.timeout)
    attempt.save(
        update_fields=[
            "status",
            "dispatches",
            "dispatched_at",
            "not_before",
            "deadline_at",
        ]
    )
    tx.set(wake_at=_db_in(min(conf.get("SAGAS_DISPATCH_LEASE"), step.timeout)))
    send_on_commit(
        tx.saga.pk, attempt.pk, timeout=step.timeout, countdown=0, first=False
    )


# --- operator actions ---------------------------------------------------------


def _lock_for_operator(saga_id: UUID | str) -> Saga:
    try:
        saga = (
            Saga.objects.select_for_update(nowait=True, of=("self",))
            .select_related("current_attempt")
            .get(pk=saga_id)
        )
    except DatabaseError:
        raise OperatorActionRefused(
            "a step of this saga is executing right now; try again in a moment"
        ) from None
    return saga


def _definition_for_operator(saga: Saga) -> SagaDefinition:
    try:
        return registry.get(saga.definition)
    except DefinitionError:
        raise OperatorActionRefused(
            f"saga definition {saga.definition!r} is not in this code base any more; "
            "only marking the saga resolved is possible"
        ) from None


def _operator(actor: str) -> str:
    return actor if actor.startswith("operator:") else f"operator:{actor}"


def saga_retry(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Run a failed saga's failed step (or compensation) again, as a new attempt."""
    with transaction.atomic():
        saga = _lock_for_operator(saga_id)
        if saga.status != SagaStatus.FAILED:
            raise OperatorActionRefused(
                f"only a failed saga can be retried, not {saga.status}"
            )
        definition = _definition_for_operator(saga)
        last = saga.attempts.order_by("-id").first()
        if last is None:
            raise OperatorActionRefused("the saga has no attempt to retry")
        tx = _Transaction(saga, _operator(actor))
        resumed = (
            SagaStatus.COMPENSATING
            if last.kind == AttemptKind.COMPENSATION
            else SagaStatus.RUNNING
        )
        tx.saga_status(resumed, detail=f"retry: {reason}")
        tx.set(last_error="", finished_at=None)
        _advance(
            tx,
            definition,
            index=last.step_index,
            kind=last.kind,
            number=last.number + 1,
        )
        tx.commit()
    return saga


def saga_resume(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Send a stuck saga's current attempt now instead of waiting for the sweeper."""
    with transaction.atomic():
        saga = _lock_for_operator(saga_id)
        attempt = saga.current_attempt
        if saga.status not in ACTIVE_SAGA_STATUSES or attempt is None:
            raise OperatorActionRefused(
                f"only an active saga can be resumed, not {saga.status}"
            )
        definition = _definition_for_operator(saga)
        step = definition.step(attempt.step_index)
        tx = _Transaction(saga, _operator(actor))
        tx.note(f"resume: {reason}", attempt=attempt)
        if attempt.status == AttemptStatus.SCHEDULED:
            _dispatch_now(tx, definition, attempt)
        else:
            tx.set(wake_at=_db_in(min(conf.get("SAGAS_DISPATCH_LEASE"), step.timeout)))
            send_on_commit(
                saga.pk, attempt.pk, timeout=step.timeout, countdown=0, first=False
            )
        tx.commit()
    return saga


def saga_compensate(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Abort a pending or running saga and compensate what it may have done."""
    with transaction.atomic():
        saga = _lock_for_operator(saga_id)
        if saga.status not in (SagaStatus.PENDING, SagaStatus.RUNNING):
            raise OperatorActionRefused(
                f"only a pending or running saga can be compensated, not {saga.status}"
            )
        definition = _definition_for_operator(saga)
        step = definition.step(saga.current_step)
        if step.kind is not StepKind.COMPENSATABLE:
            raise OperatorActionRefused(
                f"step {step.name} is past the pivot: the saga can only go forward"
            )
        tx = _Transaction(saga, _operator(actor))
        attempt = saga.current_attempt
        if attempt is not None and attempt.status in OPEN_ATTEMPT_STATUSES:
            attempt.error = f"cancelled by {tx.actor}"
            _finish_attempt(tx, attempt, AttemptStatus.CANCELLED, detail=reason)
        error = f"aborted by {tx.actor}: {reason}"
        tx.set(failed_step=step.name, error=error)
        tx.saga_status(SagaStatus.COMPENSATING, detail=error)
        # The current step may have partly run: its compensation goes first.
        _compensate_from(tx, definition, saga.current_step)
        tx.commit()
    return saga


def saga_resolve(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Close a failed saga by hand, recording the operator's note."""
    with transaction.atomic():
        saga = _lock_for_operator(saga_id)
        if saga.status != SagaStatus.FAILED:
            raise OperatorActionRefused(
                f"only a failed saga can be resolved, not {saga.status}"
            )
        tx = _Transaction(saga, _operator(actor))
        tx.saga_status(SagaStatus.RESOLVED, detail=f"resolved: {reason}")
        _close(tx)
        tx.commit()
    return saga


__all__ = [
    "IllegalTransition",
    "OperatorActionRefused",
    "saga_compensate",
    "saga_resolve",
    "saga_resume",
    "saga_retry",
    "saga_start",
    "step_execute",
    "sweep",
]
