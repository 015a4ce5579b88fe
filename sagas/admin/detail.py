"""What the saga page shows besides its fields: step diagram, attempts, timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from sagas import registry
from sagas.errors import DefinitionError
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.selectors import step_summaries
from sagas.states import ACTIVE_SAGA_STATUSES, AttemptKind, SagaStatus

# Attempts and events shown on the page, newest kept. A retriable step retrying
# for days can pile up thousands; the JSON API returns them all.
HISTORY_LIMIT = 300


@dataclass(frozen=True)
class StepNode:
    index: int
    name: str
    kind: str
    action: str
    action_attempts: int
    # "" when the step's compensation never ran; "none" when it has none.
    compensation: str
    compensation_attempts: int
    # Which lane holds the saga's current attempt, if this step does.
    current: str


@dataclass(frozen=True)
class AttemptRow:
    attempt: StepAttempt
    # From dispatch to a worker starting it; from start to finish.
    queued: str
    ran: str


@dataclass(frozen=True)
class History:
    rows: list[Any]
    omitted: bool


def current_step_name(saga: Saga) -> str:
    """Return the name of the step a live or failed saga is at, or ``""``."""
    if saga.status not in (*ACTIVE_SAGA_STATUSES, SagaStatus.FAILED):
        return ""
    try:
        return registry.get(saga.definition, saga.version).step(saga.current_step).name
    except (DefinitionError, IndexError):
        return f"#{saga.current_step}"


def step_nodes(saga: Saga) -> list[StepNode]:
    """Return one diagram node per step, in definition order."""
    try:
        steps = registry.get(saga.definition, saga.version).steps
        kinds = {step.name: str(step.kind) for step in steps}
        compensable = {step.name for step in steps if step.compensation is not None}
    except DefinitionError:
        kinds, compensable = {}, set()
    live = saga.status in (*ACTIVE_SAGA_STATUSES, SagaStatus.FAILED)
    attempt = saga.current_attempt
    current_kind = attempt.kind if attempt is not None else AttemptKind.ACTION
    nodes = []
    for index, summary in enumerate(step_summaries(saga)):
        has_compensation = summary.name in compensable or not kinds
        nodes.append(
            StepNode(
                index=index,
                name=summary.name,
                kind=kinds.get(summary.name, ""),
                action=summary.status,
                action_attempts=summary.attempts,
                compensation=summary.compensation
                or ("" if has_compensation else "none"),
                compensation_attempts=summary.compensation_attempts,
                current=current_kind if live and index == saga.current_step else "",
            )
        )
    return nodes


def _elapsed(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    return format_duration(end - start)


def time_since(moment: datetime | None) -> str:
    """Return how long ago ``moment`` was, briefly (``12 s``, ``5 min``, ``3 d``)."""
    if moment is None:
        return "-"
    seconds = max((timezone.now() - moment).total_seconds(), 0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} d"


def format_duration(value: timedelta) -> str:
    """Return a short human reading of ``value``: ``850 ms``, ``2.4 s``, ``3 min``."""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def attempt_history(saga: Saga) -> History:
    """Return the saga's latest attempts, oldest first, with their timings."""
    latest = list(
        StepAttempt.objects.filter(saga=saga).order_by("-id")[: HISTORY_LIMIT + 1]
    )
    rows = [
        AttemptRow(
            attempt=attempt,
            queued=_elapsed(attempt.dispatched_at, attempt.started_at),
            ran=_elapsed(attempt.started_at, attempt.finished_at),
        )
        for attempt in reversed(latest[:HISTORY_LIMIT])
    ]
    return History(rows=rows, omitted=len(latest) > HISTORY_LIMIT)


def event_history(saga: Saga) -> History:
    """Return the saga's latest events, oldest first."""
    latest = list(
        SagaEvent.objects.filter(saga=saga).order_by("-id")[: HISTORY_LIMIT + 1]
    )
    return History(
        rows=list(reversed(latest[:HISTORY_LIMIT])),
        omitted=len(latest) > HISTORY_LIMIT,
    )
