"""Read queries over sagas: stuck sagas, timelines, step summaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from sagas import conf, registry
from sagas.errors import DefinitionError
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.redaction import redacted_context
from sagas.states import ACTIVE_SAGA_STATUSES, AttemptKind, AttemptStatus, SagaStatus


def stuck_sagas(*, older_than: float | None = None) -> QuerySet[Saga]:
    """Return failed sagas and active ones idle for ``older_than`` seconds."""
    seconds = older_than if older_than is not None else conf.get("SAGAS_STUCK_AFTER")
    cutoff = timezone.now() - timedelta(seconds=seconds)
    return Saga.objects.filter(
        Q(status__in=ACTIVE_SAGA_STATUSES, updated_at__lt=cutoff)
        | Q(status=SagaStatus.FAILED)
    )


def saga_timeline(saga_id: UUID | str) -> QuerySet[SagaEvent]:
    """Return a saga's events, oldest first."""
    return SagaEvent.objects.filter(saga_id=saga_id).order_by("id")


def status_counts() -> dict[str, int]:
    """Return the number of sagas per status."""
    rows = Saga.objects.order_by().values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


@dataclass(frozen=True)
class StepSummary:
    name: str
    status: str
    attempts: int
    compensation: str
    compensation_attempts: int


def step_summaries(saga: Saga) -> list[StepSummary]:
    """Return one summary per step of the saga's definition, in definition order.

    A step's status is its latest action attempt's; ``not_started`` when none.
    """
    attempts = list(
        StepAttempt.objects.filter(saga=saga)
        .order_by("id")
        .values_list("step", "kind", "status")
    )
    latest: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    for step, kind, status in attempts:
        latest[(step, kind)] = status
        counts[(step, kind)] = counts.get((step, kind), 0) + 1
    try:
        names = [step.name for step in registry.get(saga.definition).steps]
    except DefinitionError:
        # A definition removed from the code: show the steps that ran.
        names = list(dict.fromkeys(step for step, _, _ in attempts))
    action, compensation = AttemptKind.ACTION, AttemptKind.COMPENSATION
    return [
        StepSummary(
            name=name,
            status=latest.get((name, action), "not_started"),
            attempts=counts.get((name, action), 0),
            compensation=latest.get((name, compensation), ""),
            compensation_attempts=counts.get((name, compensation), 0),
        )
        for name in names
    ]


def compensation_order(saga_id: UUID | str) -> list[str]:
    """Return the steps whose compensation succeeded, in the order they ran."""
    return list(
        StepAttempt.objects.filter(
            saga_id=saga_id,
            kind=AttemptKind.COMPENSATION,
            status=AttemptStatus.SUCCEEDED,
        )
        .order_by("finished_at", "id")
        .values_list("step", flat=True)
    )


def saga_summary(saga_id: UUID | str) -> dict[str, object] | None:
    """Return a saga's status and per-step summary as plain data, or None."""
    saga = Saga.objects.filter(pk=saga_id).first()
    if saga is None:
        return None
    return {
        "id": saga.pk,
        "status": saga.status,
        "steps": [summary.__dict__ for summary in step_summaries(saga)],
    }


def saga_detail(saga_id: UUID | str, *, page_size: int) -> dict[str, object] | None:
    """Return a saga with its steps and the first page of attempts and events.

    The context is redacted: keys the definition declares sensitive are hidden.
    """
    saga = Saga.objects.filter(pk=saga_id).first()
    if saga is None:
        return None
    attempts = saga_attempts(saga.pk)
    events = saga_timeline(saga.pk)
    return {
        "id": saga.pk,
        "definition": saga.definition,
        "version": saga.version,
        "business_key": saga.business_key,
        "status": saga.status,
        "context": redacted_context(saga.definition, saga.context),
        "current_step": saga.current_step,
        "failed_step": saga.failed_step,
        "error": saga.error,
        "last_error": saga.last_error,
        "created_at": saga.created_at,
        "updated_at": saga.updated_at,
        "finished_at": saga.finished_at,
        "steps": [summary.__dict__ for summary in step_summaries(saga)],
        "attempts_count": attempts.count(),
        "attempts": [attempt_row(a) for a in attempts[:page_size]],
        "timeline_count": events.count(),
        "timeline": [event_row(e) for e in events[:page_size]],
    }


def saga_attempts(saga_id: UUID | str) -> QuerySet[StepAttempt]:
    """Return a saga's step attempts, oldest first."""
    return StepAttempt.objects.filter(saga_id=saga_id).order_by("id")


def attempt_row(attempt: StepAttempt) -> dict[str, object]:
    """Return one attempt as plain data for readers."""
    return {
        "step": attempt.step,
        "kind": attempt.kind,
        "number": attempt.number,
        "status": attempt.status,
        "created_at": attempt.created_at,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "deadline_at": attempt.deadline_at,
        "dispatches": attempt.dispatches,
        "deliveries": attempt.deliveries,
        "error": attempt.error,
        "error_type": attempt.error_type,
    }


def event_row(event: SagaEvent) -> dict[str, object]:
    """Return one timeline event as plain data for readers."""
    return {
        "at": event.created_at,
        "actor": event.actor,
        "step": event.step,
        "kind": event.kind,
        "attempt": event.attempt,
        "old_status": event.old_status,
        "new_status": event.new_status,
        "detail": event.detail,
    }
