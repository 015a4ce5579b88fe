"""Statuses and the table of allowed transitions; no database needed."""

from __future__ import annotations

from django.db import models

from sagas.errors import IllegalTransition


class SagaStatus(models.TextChoices):
    # Created with its business rows; the first step is on its way.
    PENDING = "pending", "Pending"
    # Executing its steps forward.
    RUNNING = "running", "Running"
    # A step failed for good: undoing completed steps in reverse order.
    COMPENSATING = "compensating", "Compensating"
    # Every step succeeded.
    COMPLETED = "completed", "Completed"
    # Every completed step was undone.
    COMPENSATED = "compensated", "Compensated"
    # Compensation could not finish: an operator must act.
    FAILED = "failed", "Failed"
    # An operator closed a failed saga by hand, with a note.
    RESOLVED = "resolved", "Resolved"


class AttemptKind(models.TextChoices):
    ACTION = "action", "Action"
    COMPENSATION = "compensation", "Compensation"


class AttemptStatus(models.TextChoices):
    # Waiting in the database for its backoff to pass.
    SCHEDULED = "scheduled", "Scheduled"
    # Sent to the broker; a worker may be running it.
    DISPATCHED = "dispatched", "Dispatched"
    # Waiting, with no worker, for a participant's reply, an event or a person.
    WAITING = "waiting", "Waiting"
    # Finished successfully.
    SUCCEEDED = "succeeded", "Succeeded"
    # Raised an error.
    FAILED = "failed", "Failed"
    # Ran past its deadline (its effects are unknown).
    TIMED_OUT = "timed_out", "Timed out"
    # Withdrawn by an operator action before it finished.
    CANCELLED = "cancelled", "Cancelled"
    # A compensation an operator did by hand: recorded, never run.
    SKIPPED = "skipped", "Skipped"


ACTIVE_SAGA_STATUSES = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
TERMINAL_SAGA_STATUSES = (
    SagaStatus.COMPLETED,
    SagaStatus.COMPENSATED,
    SagaStatus.FAILED,
    SagaStatus.RESOLVED,
)
OPEN_ATTEMPT_STATUSES = (
    AttemptStatus.SCHEDULED,
    AttemptStatus.DISPATCHED,
    AttemptStatus.WAITING,
)

SAGA_TRANSITIONS: dict[str, frozenset[str]] = {
    # A pending saga parks when its definition is not in the code base.
    SagaStatus.PENDING: frozenset(
        {SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED}
    ),
    SagaStatus.RUNNING: frozenset(
        {SagaStatus.COMPENSATING, SagaStatus.COMPLETED, SagaStatus.FAILED}
    ),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED}),
    # An operator retry sends a failed saga back to where it stopped.
    SagaStatus.FAILED: frozenset(
        {SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.RESOLVED}
    ),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
    SagaStatus.RESOLVED: frozenset(),
}

ATTEMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    AttemptStatus.SCHEDULED: frozenset(
        {AttemptStatus.DISPATCHED, AttemptStatus.CANCELLED}
    ),
    AttemptStatus.DISPATCHED: frozenset(
        {
            AttemptStatus.WAITING,
            AttemptStatus.SUCCEEDED,
            AttemptStatus.FAILED,
            AttemptStatus.TIMED_OUT,
            AttemptStatus.CANCELLED,
        }
    ),
    AttemptStatus.WAITING: frozenset(
        {
            AttemptStatus.SUCCEEDED,
            AttemptStatus.FAILED,
            AttemptStatus.TIMED_OUT,
            AttemptStatus.CANCELLED,
        }
    ),
    AttemptStatus.SUCCEEDED: frozenset(),
    AttemptStatus.FAILED: frozenset(),
    AttemptStatus.TIMED_OUT: frozenset(),
    AttemptStatus.CANCELLED: frozenset(),
    AttemptStatus.SKIPPED: frozenset(),
}


def check_saga_transition(old: str, new: str) -> None:
    """Raise IllegalTransition unless a saga may go from ``old`` to ``new``."""
    if new not in SAGA_TRANSITIONS[old]:
        raise IllegalTransition(f"saga cannot go from {old} to {new}")


def check_attempt_transition(old: str, new: str) -> None:
    """Raise IllegalTransition unless an attempt may go from ``old`` to ``new``."""
    if new not in ATTEMPT_TRANSITIONS[old]:
        raise IllegalTransition(f"step attempt cannot go from {old} to {new}")
