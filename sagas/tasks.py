"""Celery entry points: ids in, one call into the engine."""

from __future__ import annotations

import structlog
from celery import shared_task

from sagas import conf, engine, metrics, tracing

# acks_late is safe only because the engine fences duplicates: a message
# redelivered after a worker died finds its attempt done or superseded.


@shared_task(
    name="sagas.step_execute",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=0,
)
def step_execute_task(self, saga_id: str, attempt_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run one step action or compensation of a saga."""
    # Every line logged while the step runs, the action's own included, names it.
    structlog.contextvars.bind_contextvars(saga_id=saga_id, attempt_id=attempt_id)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with tracing.step_span(saga_id, attempt_id) as span:
        outcome = engine.step_execute(saga_id, attempt_id, redelivered=redelivered)
        span.set_attribute("saga.step.outcome", outcome)
    return outcome


@shared_task(name="sagas.sweep", acks_late=True, ignore_result=True)
def sweep_task(batch: int | None = None) -> int:
    """Dispatch due retries, re-send lost steps and time out overdue ones."""
    limit = batch or int(conf.get("SAGAS_SWEEP_BATCH"))
    total = 0
    # The pass's duration, its end time and the gauges read from the database
    # (stuck, parked, active sagas) are recorded once per tick.
    with metrics.sweep_pass():
        # Drain several batches per tick so a backlog clears between beats,
        # but stop so that one tick never runs unbounded.
        for _ in range(10):
            handled = engine.sweep(batch=limit)
            total += handled
            if handled < limit:
                break
    return total
