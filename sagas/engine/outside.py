"""The outside world completing a waiting step: replies, events, approvals.

A remote step's participant replies (a Celery task or the HTTP endpoint); a
wait step is completed by an event (``saga_signal``) or by an operator
(``saga_approve`` / ``saga_reject``). A reply or signal for an attempt that is
no longer waiting (late, duplicate, superseded) changes nothing and is logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import structlog
from django.db import transaction

from sagas.definition import Wait
from sagas.engine import machine
from sagas.errors import OperatorActionRefused, PermanentError, TransientError
from sagas.models import Saga, StepAttempt
from sagas.states import ACTIVE_SAGA_STATUSES, AttemptStatus

log = structlog.get_logger("sagas.engine")

IGNORED = "ignored"


def step_reply(
    saga_id: UUID | str,
    attempt_id: int,
    *,
    status: str,
    result: Mapping[str, Any] | None = None,
    error: str = "",
    transient: bool = False,
    partial: bool = False,
    participant: str = "participant",
) -> str:
    """Apply a participant's reply to the remote attempt it answers.

    ``status`` is ``completed`` (with ``result``) or ``failed`` (with ``error``;
    ``transient`` for worth another attempt, ``partial`` if it may have left
    effects). Return ``completed``, ``failed`` or ``ignored``.
    """
    if status not in ("completed", "failed"):
        raise ValueError(f"a reply's status is completed or failed, not {status!r}")
    actor = f"participant:{participant}"
    if status == "completed":
        return _complete(saga_id, attempt_id, result, actor=actor)
    exc: Exception = (
        TransientError(error or "failed")
        if transient
        else PermanentError(error or "failed", partial=partial)
    )
    return _fail(saga_id, attempt_id, exc, actor=actor)


def saga_signal(
    saga_id: UUID | str,
    event: str,
    *,
    result: Mapping[str, Any] | None = None,
    actor: str = "signal",
) -> str:
    """Complete the saga's wait step that awaits ``event``; return the outcome."""
    attempt = _waiting(saga_id)
    if attempt is None:
        return _ignored(saga_id, None, f"no step waits for {event!r}")
    step, function = _wait_step(attempt)
    if function is None or function.event != event:
        return _ignored(saga_id, attempt.pk, f"{step} does not wait for {event!r}")
    return _complete(saga_id, attempt.pk, result, actor=actor)


def saga_approve(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Approve the saga's waiting approval step: the saga goes on."""
    attempt = _approval(saga_id)
    outcome = _complete(
        saga_id,
        attempt.pk,
        None,
        actor=machine.operator_actor(actor),
        detail=f"approved: {reason}",
    )
    if outcome == IGNORED:
        raise OperatorActionRefused("the approval is no longer waiting")
    return Saga.objects.get(pk=saga_id)


def saga_reject(saga_id: UUID | str, *, actor: str, reason: str) -> Saga:
    """Reject the saga's waiting approval step: the saga compensates."""
    attempt = _approval(saga_id)
    operator = machine.operator_actor(actor)
    outcome = _fail(
        saga_id,
        attempt.pk,
        PermanentError(f"rejected by {operator}: {reason}"),
        actor=operator,
    )
    if outcome == IGNORED:
        raise OperatorActionRefused("the approval is no longer waiting")
    return Saga.objects.get(pk=saga_id)


def _approval(saga_id: UUID | str) -> StepAttempt:
    attempt = _waiting(saga_id)
    if attempt is None:
        raise OperatorActionRefused("the saga is not waiting for an approval")
    _, function = _wait_step(attempt)
    if function is None or not function.approval:
        raise OperatorActionRefused(f"step {attempt.step} is not an approval")
    return attempt


def _waiting(saga_id: UUID | str) -> StepAttempt | None:
    saga = (
        Saga.objects.select_related("current_attempt")
        .filter(pk=saga_id, status__in=ACTIVE_SAGA_STATUSES)
        .first()
    )
    if saga is None or saga.current_attempt is None:
        return None
    attempt = saga.current_attempt
    return attempt if attempt.status == AttemptStatus.WAITING else None


def _wait_step(attempt: StepAttempt) -> tuple[str, Wait | None]:
    saga = Saga.objects.get(pk=attempt.saga_id)
    try:
        step = machine.step_of(machine.definition_of(saga), attempt)
    except machine.DefinitionUnavailable:
        return attempt.step, None
    function = machine.function_of(step, attempt)
    return step.name, function if isinstance(function, Wait) else None


def _claim(
    saga_id: UUID | str, attempt_id: int, actor: str
) -> tuple[machine.Transition, Any, Any, StepAttempt] | None:
    saga = machine.lock_saga(saga_id)
    if (
        saga is None
        or saga.status not in ACTIVE_SAGA_STATUSES
        or saga.current_attempt_id != attempt_id
        or saga.current_attempt is None
        or saga.current_attempt.status != AttemptStatus.WAITING
    ):
        return None
    definition = machine.definition_of(saga)
    attempt = saga.current_attempt
    step = machine.step_of(definition, attempt)
    return machine.Transition(saga, actor), definition, step, attempt


def _complete(
    saga_id: UUID | str,
    attempt_id: int,
    result: Mapping[str, Any] | None,
    *,
    actor: str,
    detail: str = "",
) -> str:
    try:
        with transaction.atomic():
            claimed = _claim(saga_id, attempt_id, actor)
            if claimed is None:
                return _ignored(saga_id, attempt_id, "not waiting")
            tx, definition, _, attempt = claimed
            if detail:
                tx.note(detail, attempt=attempt)
            machine.succeed(tx, definition, attempt, result)
            tx.commit()
    except (machine.DefinitionUnavailable, OperatorActionRefused):
        raise
    except Exception as exc:
        # A result the saga cannot take, or an end hook raising: the reply
        # counts as a failure after the participant did its work.
        return _fail(saga_id, attempt_id, exc, actor=actor, after_return=True)
    return "completed"


def _fail(
    saga_id: UUID | str,
    attempt_id: int,
    exc: Exception,
    *,
    actor: str,
    after_return: bool = False,
) -> str:
    with transaction.atomic():
        claimed = _claim(saga_id, attempt_id, actor)
        if claimed is None:
            return _ignored(saga_id, attempt_id, "not waiting")
        tx, definition, _, attempt = claimed
        machine.record_failure(tx, definition, attempt, exc, after_return=after_return)
        tx.commit()
    return "failed"


def _ignored(saga_id: UUID | str, attempt_id: int | None, why: str) -> str:
    log.warning(
        "step.reply_ignored", saga_id=str(saga_id), attempt_id=attempt_id, why=why
    )
    return IGNORED
