"""The transaction recorder, starting a saga, and creating its attempts.

Every change goes through the transition tables in ``sagas.states``, is written
as a ``SagaEvent`` in the same transaction, and is logged once committed.

Concurrency: a worker executing a step holds the saga row lock for the whole
step (action included), so a duplicate message waits, then finds its attempt
superseded and does nothing; sweepers skip locked rows, which is how they tell
a step being executed from a step whose worker or message was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.db import models, transaction
from django.db.models.expressions import CombinedExpression, ExpressionWrapper
from django.db.models.functions import Now

from sagas import conf, registry, signals, tracing
from sagas.definition import (
    SagaDefinition,
)
from sagas.dispatch import send_on_commit
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.states import (
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
        # The saga's age by the database clock, for the signal (when known).
        now, created = getattr(self.saga, "db_now", None), self.saga.created_at
        age = None
        if now is not None and isinstance(created, datetime):
            age = (now - created).total_seconds()
        _write_events(self.events, {self.saga.pk: self.saga.definition}, age=age)


def _write_events(
    events: list[SagaEvent], definitions: dict[Any, str], age: float | None = None
) -> None:
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
    transaction.on_commit(lambda: _log_transitions(lines, age))


def _log_transitions(lines: list[dict[str, Any]], age: float | None = None) -> None:
    for line in lines:
        if line["transition"].endswith(f"-> {SagaStatus.FAILED}") and not line["kind"]:
            log.error("saga.needs_operator", **line)
        else:
            log.info("saga.transition", **line)
    for line in lines:  # sagas.signals, for metrics and traces
        fields = {key: value for key, value in line.items() if key != "transition"}
        old, _, new = line["transition"].partition(" -> ")
        signals.saga_transition.send_robust(
            Saga, version=None, old_status=old.strip("-"), new_status=new, age=age,
            **fields,
        )  # fmt: skip


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
            trace_context=tracing.saga_context(definition.name),  # one trace per saga
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
