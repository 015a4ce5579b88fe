"""Celery entry points: ids in, one call into the engine."""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from sagas import engine

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
    return engine.step_execute(
        saga_id, attempt_id, redelivered=redelivered, continue_inline=True
    )


@shared_task(name="sagas.sweep", acks_late=True, ignore_result=True)
def sweep_task(batch: int | None = None) -> int:
    """Dispatch due retries, re-send lost steps and time out overdue ones."""
    return engine.sweep_pass(batch=batch)


@shared_task(name="sagas.step_reply", acks_late=True, ignore_result=True)
def step_reply_task(
    saga_id: str,
    attempt_id: int,
    status: str,
    result: dict[str, Any] | None = None,
    error: str = "",
    transient: bool = False,
    partial: bool = False,
    participant: str = "participant",
) -> str:
    """Apply a participant's reply to a remote step (late or duplicate: ignored)."""
    return engine.step_reply(
        saga_id,
        attempt_id,
        status=status,
        result=result,
        error=error,
        transient=transient,
        partial=partial,
        participant=participant,
    )
