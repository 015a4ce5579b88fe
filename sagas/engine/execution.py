"""Running one step action or compensation, and what follows from its outcome."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now

from sagas import conf, registry, signals
from sagas.definition import (
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
)
from sagas.engine.core import (
    ENGINE,
    PoisonMessage,
    StepTimedOut,
    _advance,
    _Transaction,
)
from sagas.models import Saga, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
)

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
            began = time.monotonic()  # step_ran's duration
            try:
                # The action's own writes commit with the step's record, or not
                # at all: no savepoint, a failure rolls the whole step back.
                result = function(context)
            except Exception as exc:
                raise _ActionFailed(
                    exc, attempt.started_at, time.monotonic() - began
                ) from exc
            duration = time.monotonic() - began
            _succeed(tx, definition, attempt, dict(result or {}))
            tx.commit()
    except _ActionFailed as failed:
        return _record_failure(saga_id, attempt_id, failed)
    _send_step_ran(tx.saga, definition, attempt, "succeeded", duration)
    return "succeeded"


def _send_step_ran(
    saga: Saga,
    definition: SagaDefinition,
    attempt: StepAttempt,
    outcome: str,
    duration: float,
) -> None:
    """Send ``sagas.signals.step_ran`` (metrics) once the outcome is committed."""
    # A backoff sent as a broker countdown is not lag: count from when it was due.
    due = attempt.not_before or attempt.dispatched_at
    lag = None
    if due is not None and attempt.started_at is not None:
        lag = (attempt.started_at - due).total_seconds()
    signals.step_ran.send_robust(
        Saga,
        saga_id=str(saga.pk),
        definition=saga.definition,
        version=saga.version,
        step=attempt.step,
        step_kind=definition.step(attempt.step_index).kind.value,
        kind=attempt.kind,
        attempt=attempt.number,
        outcome=outcome,
        duration=duration,
        lag=lag,
    )


class _ActionFailed(Exception):
    def __init__(self, exc: Exception, started_at: Any, duration: float) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.started_at = started_at
        self.duration = duration


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
    outcome = "timed_out" if isinstance(exc, StepTimedOut) else "failed"
    _send_step_ran(tx.saga, definition, attempt, outcome, failed.duration)
    return outcome


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
