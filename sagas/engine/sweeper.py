"""The beat sweeper: due backoffs, lapsed leases and overdue attempts."""

from __future__ import annotations

import structlog
from django.db import transaction

from sagas import conf, metrics
from sagas.definition import Remote, SagaDefinition, Step
from sagas.engine import machine
from sagas.models import Saga
from sagas.schedule import record_sweep
from sagas.states import AttemptStatus

log = structlog.get_logger("sagas.engine")

# Batches one sweep task drains before it yields to the next beat tick.
ROUNDS = 10


def sweep_pass(*, batch: int | None = None) -> int:
    """Sweep batch after batch until the due work is done or ``ROUNDS`` are spent.

    The pass's duration, its end time and the gauges read from the database
    (stuck, parked, active sagas) are recorded once per pass; then the
    heartbeat that the system check and the admin look at.
    """
    limit = batch or int(conf.get("SAGAS_SWEEP_BATCH"))
    total = 0
    with metrics.sweep_pass():
        # Drain several batches per tick so a backlog clears between beats, but
        # stop so that one tick never runs unbounded.
        for _ in range(ROUNDS):
            handled = sweep(batch=limit)
            total += handled
            if handled < limit:
                break
    record_sweep(total)
    return total


def sweep(*, batch: int | None = None) -> int:
    """Handle sagas whose wake-up time has come; return how many were handled.

    Dispatch attempts whose backoff is over, re-send attempts whose message was
    not picked up within the lease, time out attempts past their deadline, and
    park sagas whose definition version is no longer in the code. Rows locked
    by a worker executing a step are skipped, so any number of sweepers may
    run at once.
    """
    # A bounded batch keeps the transaction short; the next beat tick takes the rest.
    limit = batch or int(conf.get("SAGAS_SWEEP_BATCH"))
    with transaction.atomic():
        claimed = machine.claim_due(limit)
        runnable: list[tuple[machine.Due, SagaDefinition, Step]] = []
        rest: list[machine.Due] = []
        for due in claimed:
            if due.attempt_id is None:
                rest.append(due)
                continue
            try:
                definition = machine.definition_of(due)
                step = machine.step_of(definition, due)
            except machine.DefinitionUnavailable:
                rest.append(due)
                continue
            runnable.append((due, definition, step))
        # Re-sends and due backoffs, the bulk of the work, are written for the
        # whole batch at once; the rest take the engine's full path, each in a
        # savepoint so one saga's error cannot hold the batch back.
        rest += machine.resend(runnable)
        for saga in machine.load_claimed(rest):
            try:
                with transaction.atomic():
                    _wake(saga)
            except Exception as during:
                log.exception("sweep.saga_failed", saga_id=str(saga.pk))
                try:
                    with transaction.atomic():
                        _park_unsweepable(saga, during)
                except Exception:
                    log.exception("sweep.park_failed", saga_id=str(saga.pk))
                    # Never leave it first in line on every tick.
                    machine.postpone(saga, conf.get("SAGAS_DISPATCH_LEASE"))
    return len(claimed)


def _wake(saga: Saga) -> None:
    """Time out an overdue attempt, or park a saga that cannot run."""
    tx = machine.Transition(saga, machine.SWEEPER)
    attempt = saga.current_attempt
    if attempt is None:
        tx.set(wake_at=None)
        tx.commit()
        return
    try:
        definition = machine.definition_of(saga)
        step = machine.step_of(definition, attempt)
    except machine.DefinitionUnavailable as exc:
        machine.park_unavailable(tx, exc)
        tx.commit()
        return
    machine.start_running(tx)
    overdue = attempt.deadline_at is None or attempt.deadline_at <= saga.db_now  # type: ignore[attr-defined]
    if attempt.status == AttemptStatus.WAITING and not overdue:
        if isinstance(machine.function_of(step, attempt), Remote):
            # A remote command unanswered within its lease: send it again.
            machine.resend_command(tx, step, attempt)
        else:
            tx.set(wake_at=attempt.deadline_at)
    else:
        machine.wait_expired(tx, definition, step, attempt)
    tx.commit()


def _park_unsweepable(saga: Saga, during: Exception) -> None:
    """Park a saga whose timeout could not be recorded (a hook raising, say)."""
    fresh = machine.lock_saga(saga.pk)
    if fresh is None or fresh.current_attempt is None:
        return
    tx = machine.Transition(fresh, machine.SWEEPER)
    definition = machine.definition_of(fresh)
    attempt = fresh.current_attempt
    step = machine.step_of(definition, attempt)
    machine.start_running(tx)
    timed_out = machine.StepTimedOut(f"no result within {step.timeout}s")
    machine.park_after(tx, definition, attempt, timed_out, during)
    tx.commit()
