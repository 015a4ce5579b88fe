"""Operator actions (retry, resume, compensate, resolve), recorded with the actor."""

from __future__ import annotations

from uuid import UUID

from django.db import DatabaseError, transaction

from sagas import conf, registry
from sagas.definition import (
    SagaDefinition,
    StepKind,
)
from sagas.dispatch import send_on_commit
from sagas.engine.core import (
    _advance,
    _db_in,
    _mark_dispatched,
    _Transaction,
)
from sagas.engine.execution import _close, _compensate_from, _finish_attempt
from sagas.errors import DefinitionError, OperatorActionRefused
from sagas.models import Saga, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    OPEN_ATTEMPT_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
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
