"""Operator verbs, each recorded in the timeline with the operator's name.

retry, resume, compensate, skip a compensation, resolve, and migrate a saga to
another version of its definition. Each locks the saga without waiting (a
step executing right now means "try again in a moment") and refuses, with a
reason, whatever does not apply to the saga's state.
"""

from __future__ import annotations

from uuid import UUID

from sagas import registry
from sagas.definition import Remote, SagaDefinition, StepKind
from sagas.engine import machine
from sagas.errors import OperatorActionRefused
from sagas.models import Saga, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    OPEN_ATTEMPT_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
)


def _definition(saga: Saga) -> SagaDefinition:
    try:
        return machine.definition_of(saga)
    except machine.DefinitionUnavailable as exc:
        raise OperatorActionRefused(
            f"{exc} (marking it resolved, or moving it to a version in the code, "
            "is possible)"
        ) from None


def _require_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise OperatorActionRefused("a reason is required")
    return reason


def _positions(definition: SagaDefinition) -> dict[str, int]:
    """Return each step's position in ``definition``, by name."""
    return {step.name: index for index, step in enumerate(definition.steps)}


def _last_attempt(saga: Saga) -> StepAttempt:
    last = saga.attempts.order_by("-id").first()
    if last is None:
        raise OperatorActionRefused("the saga has no attempt")
    return last


def saga_retry(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Run a failed saga's failed step (or compensation) again, with a fresh budget.

    A saga parked after its last attempt succeeded (an end hook raised) goes on
    from there.
    """
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        if saga.status != SagaStatus.FAILED:
            raise OperatorActionRefused(
                f"only a failed saga can be retried, not {saga.status}"
            )
        definition = _definition(saga)
        last = _last_attempt(saga)
        index = _positions(definition).get(last.step)
        if index is None:
            raise OperatorActionRefused(
                f"step {last.step!r} is not in {definition.label}"
            )
        tx = machine.Transition(saga, machine.operator_actor(actor))
        compensating = last.kind == AttemptKind.COMPENSATION
        resumed = SagaStatus.COMPENSATING if compensating else SagaStatus.RUNNING
        tx.saga_status(resumed, detail=f"retry: {reason}")
        tx.set(last_error="", finished_at=None)
        if not compensating:
            # Going forward again: the earlier failure no longer describes it.
            tx.set(failed_step="", error="")
        if last.status in (AttemptStatus.SUCCEEDED, AttemptStatus.SKIPPED):
            last.step_index = index
            machine.continue_after(tx, definition, last)
        else:
            machine.advance(
                tx,
                definition,
                index=index,
                kind=last.kind,
                number=last.number + 1,
                try_number=1,
            )
        tx.commit()
    return saga


def saga_resume(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Send a stuck saga's current attempt now instead of waiting for the sweeper."""
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        attempt = saga.current_attempt
        if saga.status not in ACTIVE_SAGA_STATUSES or attempt is None:
            raise OperatorActionRefused(
                f"only an active saga can be resumed, not {saga.status}"
            )
        definition = _definition(saga)
        step = machine.step_of(definition, attempt)
        tx = machine.Transition(saga, machine.operator_actor(actor))
        tx.note(f"resume: {reason}", attempt=attempt)
        if attempt.status == AttemptStatus.WAITING:
            if not isinstance(machine.function_of(step, attempt), Remote):
                raise OperatorActionRefused(
                    f"step {step.name} waits for an event or an approval: "
                    "signal, approve or reject it"
                )
            machine.resend_command(tx, step, attempt)
        else:
            machine.dispatch_now(tx, definition, step, attempt)
        tx.commit()
    return saga


def saga_compensate(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Abort a pending or running saga and compensate what it may have done."""
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        if saga.status not in (SagaStatus.PENDING, SagaStatus.RUNNING):
            raise OperatorActionRefused(
                f"only a pending or running saga can be compensated, not {saga.status}"
            )
        definition = _definition(saga)
        step = definition.steps[saga.current_step]
        if step.kind is not StepKind.COMPENSATABLE:
            raise OperatorActionRefused(
                f"step {step.name} is past the pivot: the saga can only go forward"
            )
        tx = machine.Transition(saga, machine.operator_actor(actor))
        attempt = saga.current_attempt
        if attempt is not None and attempt.status in OPEN_ATTEMPT_STATUSES:
            # A dispatched attempt may have run partly before its worker died.
            machine.finish_attempt(
                tx,
                attempt,
                AttemptStatus.CANCELLED,
                error=OperatorActionRefused(f"cancelled by {tx.actor}"),
                effects_possible=attempt.status
                in (AttemptStatus.DISPATCHED, AttemptStatus.WAITING),
                detail=reason,
            )
        error = f"aborted by {tx.actor}: {reason}"
        tx.set(failed_step=step.name, error=error)
        tx.saga_status(SagaStatus.COMPENSATING, detail=error)
        machine.compensate_next(tx, definition)
        tx.commit()
    return saga


def saga_skip_compensation(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Record a parked saga's failed compensation as done by hand, and go on.

    Compensation continues with the step before it, in reverse order as usual.
    """
    reason = _require_reason(reason)
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        last = saga.attempts.order_by("-id").first() if saga.pk else None
        if (
            saga.status != SagaStatus.FAILED
            or last is None
            or last.kind != AttemptKind.COMPENSATION
            or last.status in (AttemptStatus.SUCCEEDED, AttemptStatus.SKIPPED)
        ):
            raise OperatorActionRefused(
                "only a saga parked on a failed compensation can skip it"
            )
        definition = _definition(saga)
        index = _positions(definition).get(last.step)
        if index is None:
            raise OperatorActionRefused(
                f"step {last.step!r} is not in {definition.label}"
            )
        tx = machine.Transition(saga, machine.operator_actor(actor))
        tx.saga_status(SagaStatus.COMPENSATING, detail=f"skip {last.step}: {reason}")
        tx.set(last_error="", finished_at=None)
        machine.skip_compensation(tx, definition.steps[index], last, reason)
        machine.compensate_next(tx, definition)
        tx.commit()
    return saga


def saga_resolve(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Close a failed saga by hand, recording the operator's note.

    The definition's ``on_resolved`` hook runs in the same transaction; if it
    raises, nothing changes and the operator is told why.
    """
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        if saga.status != SagaStatus.FAILED:
            raise OperatorActionRefused(
                f"only a failed saga can be resolved, not {saga.status}"
            )
        # A definition no longer in the code has no hook to run.
        definition = registry.find(saga.definition, saga.version)
        tx = machine.Transition(saga, machine.operator_actor(actor))
        try:
            machine.resolve(tx, definition, reason)
        except Exception as exc:
            kind, message = machine.error_fields(exc)
            raise OperatorActionRefused(
                f"the on_resolved hook raised {kind}: {message}"
            ) from exc
        tx.commit()
    return saga


def saga_migrate(saga_id: UUID | str, *, version: int, actor: str, reason: str) -> Saga:
    """Move a saga to another version of its definition (instance migration).

    Allowed when every step the saga has run maps by name onto the target, in
    the same order, and the target adds no step before the saga's current
    position (it would never run). Attempts keep their names, so idempotency
    keys, and the refunds keyed by them, stay the same.
    """
    reason = _require_reason(reason)
    with machine.operator_transaction():
        saga = machine.lock_for_operator(saga_id)
        if saga.status not in (*ACTIVE_SAGA_STATUSES, SagaStatus.FAILED):
            raise OperatorActionRefused(
                f"only an active or failed saga can be migrated, not {saga.status}"
            )
        if version == saga.version:
            raise OperatorActionRefused(f"the saga already runs version {version}")
        target = registry.find(saga.definition, version)
        if target is None:
            raise OperatorActionRefused(
                f"no saga definition {saga.definition!r} version {version} in the code"
            )
        ran = list(
            dict.fromkeys(
                StepAttempt.objects.filter(saga=saga)
                .order_by("id")
                .values_list("step", flat=True)
            )
        )
        positions = _positions(target)
        found = {name: positions.get(name) for name in ran}
        missing = [name for name, index in found.items() if index is None]
        mapping = {name: index for name, index in found.items() if index is not None}
        if missing:
            raise OperatorActionRefused(
                f"{target.label} has no step {', '.join(missing)}: the saga cannot "
                "map onto it"
            )
        forward = [mapping[name] for name in ran]
        if forward != sorted(forward):
            raise OperatorActionRefused(
                f"{target.label} runs the saga's steps in another order"
            )
        attempt = saga.current_attempt
        current = attempt.step if attempt is not None else (ran[-1] if ran else "")
        position = mapping.get(current, 0)
        skipped = [
            step.name for step in target.steps[:position] if step.name not in mapping
        ]
        if skipped:
            raise OperatorActionRefused(
                f"{target.label} adds {', '.join(skipped)} before {current}: it "
                "would never run"
            )
        tx = machine.Transition(saga, machine.operator_actor(actor))
        old = saga.version
        for name, index in mapping.items():
            StepAttempt.objects.filter(saga=saga, step=name).update(step_index=index)
        if attempt is not None:
            attempt.step_index = position
        tx.set(version=version, current_step=position)
        tx.note(f"migrated from version {old} to {version}: {reason}")
        tx.commit()
    return saga
