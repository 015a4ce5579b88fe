"""Running one step action or compensation, and recording whatever happens.

A step runs in one transaction: lock the saga, run the function, record the
success and what follows. Anything that goes wrong in it (the function, its
result, a hook, writing the record) rolls that transaction back and is then
recorded as a failed attempt, with its real error, in a transaction of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F

from sagas import conf, dispatch, tracing
from sagas.definition import Remote, SagaDefinition, Step, Wait
from sagas.engine import machine
from sagas.errors import WorkerLost
from sagas.models import Saga, StepAttempt
from sagas.signals import step_ran
from sagas.states import ACTIVE_SAGA_STATUSES, AttemptStatus

log = structlog.get_logger("sagas.engine")


@dataclass
class _Claim:
    tx: machine.Transition
    definition: SagaDefinition
    step: Step
    attempt: StepAttempt


# The process running the step is going away (Celery's shutdown and
# cancellation raise SystemExit in a pool process): nothing is recorded, the
# step's transaction rolls back, and the attempt is sent again, as after kill -9.
_PROCESS_ENDING = (KeyboardInterrupt, SystemExit, WorkerLost)


class _Parked:
    """The saga could not run this step (its definition is gone) and was parked."""


_PARKED = _Parked()


class _StepFailed(Exception):
    def __init__(self, exc: BaseException, *, after_return: bool) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.after_return = after_return


def step_execute(
    saga_id: UUID | str,
    attempt_id: int,
    *,
    redelivered: bool = False,
    continue_inline: bool = False,
) -> str:
    """Run one step action or compensation; return what happened, for logs.

    A message for an attempt that is no longer the saga's current one, or that
    is no longer dispatched, changes nothing ("fenced").

    ``continue_inline`` (a worker's task): time each step out at its own
    timeout, and run the saga's next steps here, each in its own transaction,
    up to ``SAGAS_INLINE_STEPS`` steps or ``SAGAS_INLINE_SECONDS``; then send
    the next one to the broker so other sagas get their turn.
    """
    if not continue_inline:
        return _traced(saga_id, attempt_id, redelivered=redelivered, limited=False)
    began = time.monotonic()
    with machine.continuing(saga_id) as following:
        try:
            outcome = _traced(
                saga_id, attempt_id, redelivered=redelivered, limited=True
            )
            if outcome == "fenced" and redelivered:
                # The worker that took this message before may have died in a
                # step it ran inline, for which no message exists: run that
                # step now (counted as a redelivery of it, for poison).
                current = _current_dispatched(saga_id)
                if current is not None and current != attempt_id:
                    outcome = _traced(saga_id, current, redelivered=True, limited=True)
            for steps in itertools.count(1):
                nxt = following.take()
                if nxt is None:
                    break
                if (
                    steps >= conf.get("SAGAS_INLINE_STEPS")
                    or time.monotonic() - began >= conf.get("SAGAS_INLINE_SECONDS")
                    or not _can_time_out()
                ):
                    dispatch.send_many([nxt])
                    break
                outcome = _traced(
                    saga_id, nxt.attempt_id, limited=True, kept=following.take_saga()
                )
        finally:
            # An attempt recorded but neither run nor sent goes to the broker.
            left = following.take()
            if left is not None:
                dispatch.send_many([left])
    return outcome


def _traced(
    saga_id: UUID | str,
    attempt_id: int,
    *,
    limited: bool,
    redelivered: bool = False,
    kept: Saga | None = None,
) -> str:
    """Run one attempt in its own span, a child of the saga's trace."""
    with tracing.step_span(str(saga_id), attempt_id) as span:
        outcome = _execute(
            saga_id, attempt_id, limited=limited, redelivered=redelivered, kept=kept
        )
        span.set_attribute("saga.step.outcome", outcome)
    return outcome


def _current_dispatched(saga_id: UUID | str) -> int | None:
    """Return the saga's current attempt if it is dispatched, else None."""
    return (
        Saga.objects.filter(
            pk=saga_id,
            status__in=ACTIVE_SAGA_STATUSES,
            current_attempt__status=AttemptStatus.DISPATCHED,
        )
        .values_list("current_attempt_id", flat=True)
        .first()
    )


def _can_time_out() -> bool:
    """Return True if a step run here can be interrupted at its timeout."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _time_limit(seconds: float, enabled: bool) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with SoftTimeLimitExceeded.

    Celery's time limits cover a whole task, which may run several steps; each
    step gets its own here (SIGALRM, so only in a main thread). The task's hard
    limit still kills a worker that ignores the interruption.
    """
    if not enabled or not _can_time_out():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"ran past its {seconds}s timeout")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _execute(
    saga_id: UUID | str,
    attempt_id: int,
    *,
    limited: bool,
    redelivered: bool = False,
    kept: Saga | None = None,
) -> str:
    """Run one attempt and record its outcome; return it.

    ``kept``: the saga as this process's last transaction wrote it, to start
    from if nobody has written it since (``machine.relock_saga``).
    """
    if redelivered and _count_delivery(attempt_id) > conf.get("SAGAS_MAX_DELIVERIES"):
        return _park_poison(saga_id, attempt_id)
    machine.forget_continuation()
    report: dict[str, Any] = {}
    ran = False
    try:
        with transaction.atomic():
            claimed = _claim(saga_id, attempt_id, kept)
            if claimed is None:
                return "fenced"
            if claimed is _PARKED:
                return "parked"
            assert isinstance(claimed, _Claim)
            tx, attempt = claimed.tx, claimed.attempt
            report = _report(claimed)
            function = machine.function_of(claimed.step, attempt)
            assert function is not None
            if isinstance(function, Remote | Wait):
                machine.wait_outside(tx, claimed.step, attempt, function)
                tx.commit()
                return "waiting"
            context = machine.step_context(tx.saga, claimed.step, attempt)
            began = time.monotonic()
            ran = True
            try:
                # The action's own writes commit with the step's record, or not
                # at all: no savepoint, a failure rolls the whole step back.
                with _time_limit(claimed.step.timeout, limited):
                    result = function(context)
            except _PROCESS_ENDING:
                raise
            except BaseException as exc:
                report["duration"] = time.monotonic() - began
                raise _StepFailed(exc, after_return=False) from exc
            report["duration"] = time.monotonic() - began
            machine.succeed(tx, claimed.definition, attempt, result)
            tx.commit()
    except _StepFailed as failed:
        outcome = _record(saga_id, attempt_id, failed.exc, after_return=False)
    except _PROCESS_ENDING:
        raise
    except BaseException as exc:
        if not ran:
            # Nothing ran: the saga lock or the database failed. The message
            # is acked; the sweeper re-sends the attempt when its lease lapses.
            raise
        outcome = _record(saga_id, attempt_id, exc, after_return=True)
    else:
        outcome = "succeeded"
    _signal(report, outcome)
    return outcome


def _report(claimed: _Claim) -> dict[str, Any]:
    saga, attempt = claimed.tx.saga, claimed.attempt
    # A backoff sent as a broker countdown is not lag: count from when it was due.
    dispatched = attempt.not_before or attempt.dispatched_at
    now = saga.db_now  # type: ignore[attr-defined]
    return {
        "saga_id": str(saga.pk),
        "definition": saga.definition,
        "version": saga.version,
        "step": attempt.step,
        "step_kind": str(claimed.step.kind),
        "kind": attempt.kind,
        "attempt": attempt.number,
        "duration": 0.0,
        "lag": (now - dispatched).total_seconds() if dispatched else None,
    }


def _signal(report: dict[str, Any], outcome: str) -> None:
    if not report or outcome not in ("succeeded", "failed", "timed_out"):
        return
    for receiver, response in step_ran.send_robust(
        sender=Saga, outcome=outcome, **report
    ):
        if isinstance(response, Exception):
            log.warning(
                "step.signal_receiver_failed",
                receiver=repr(receiver),
                error=repr(response),
            )


def _claim(
    saga_id: UUID | str, attempt_id: int, kept: Saga | None = None
) -> _Claim | _Parked | None:
    """Lock the saga; return it ready to change, or None if the message is stale."""
    saga = None if kept is None else machine.relock_saga(kept)
    if saga is None:
        saga = machine.lock_saga(saga_id)
    if saga is None or not _is_current(saga, attempt_id):
        return None
    attempt = saga.current_attempt
    assert attempt is not None
    tx = machine.Transition(saga, machine.ENGINE, deferred=True)
    try:
        definition = machine.definition_of(saga)
        step = machine.step_of(definition, attempt)
    except machine.DefinitionUnavailable as exc:
        machine.park_unavailable(tx, exc)
        tx.commit()
        return _PARKED
    machine.start_running(tx)
    attempt.started_at = saga.db_now  # type: ignore[attr-defined]
    return _Claim(tx, definition, step, attempt)


def _is_current(saga: Saga, attempt_id: int) -> bool:
    return (
        saga.status in ACTIVE_SAGA_STATUSES
        and saga.current_attempt_id == attempt_id
        and saga.current_attempt is not None
        and saga.current_attempt.status == AttemptStatus.DISPATCHED
    )


def _record(
    saga_id: UUID | str, attempt_id: int, exc: BaseException, *, after_return: bool
) -> str:
    """Record a failed run in a new transaction, if its attempt is still current.

    A duplicate delivery may have recorded it meanwhile: then this is fenced.
    If recording it fails too (a hook raising, a database error), the saga is
    parked with both errors.
    """
    if isinstance(exc, SoftTimeLimitExceeded):
        exc = machine.StepTimedOut(f"ran past its time limit ({exc!r})")
    error_type, message = machine.error_fields(exc)
    log.info(
        "step.failed",
        saga_id=str(saga_id),
        attempt_id=attempt_id,
        error_type=error_type,
        error=message,
        after_return=after_return,
    )
    machine.forget_continuation()
    try:
        with transaction.atomic():
            claimed = _claim(saga_id, attempt_id)
            if claimed is None:
                return "fenced"
            if claimed is _PARKED:
                return "parked"
            assert isinstance(claimed, _Claim)
            machine.record_failure(
                claimed.tx,
                claimed.definition,
                claimed.attempt,
                exc,
                after_return=after_return,
            )
            claimed.tx.commit()
    except (OperationalError, InterfaceError):
        # The database is unreachable: nothing can be recorded now. The
        # attempt stays dispatched and the sweeper sends it again later.
        raise
    except Exception as during:
        log.exception("step.record_failed", saga_id=str(saga_id), attempt_id=attempt_id)
        return _park_unrecorded(saga_id, attempt_id, exc, during)
    return "timed_out" if isinstance(exc, machine.StepTimedOut) else "failed"


def _park_unrecorded(
    saga_id: UUID | str, attempt_id: int, exc: BaseException, during: Exception
) -> str:
    with transaction.atomic():
        claimed = _claim(saga_id, attempt_id)
        if claimed is None:
            return "fenced"
        if claimed is _PARKED:
            return "parked"
        assert isinstance(claimed, _Claim)
        machine.park_after(claimed.tx, claimed.definition, claimed.attempt, exc, during)
        claimed.tx.commit()
    return "parked"


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
        if claimed is _PARKED:
            return "parked"
        assert isinstance(claimed, _Claim)
        exc = machine.PoisonMessage(
            f"crashed its worker {claimed.attempt.deliveries - 1} times"
        )
        machine.record_failure(claimed.tx, claimed.definition, claimed.attempt, exc)
        claimed.tx.commit()
    return "poison"
