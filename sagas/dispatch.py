"""Sending step messages to the broker, only ever after a commit.

The broker is a wake-up call, not the source of truth: a message lost here is
found again by the sweeper from the attempt's ``wake_at``.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

import structlog
from django.db import transaction

from sagas import conf

log = structlog.get_logger("sagas.dispatch")

# Redis serves priority 0 first: a saga already in flight moves ahead of sagas
# not yet started, so a burst does not stretch every saga's latency to the
# whole drain time.
PRIORITY_CONTINUATION = 0
PRIORITY_START = 6


def send_on_commit(
    saga_id: UUID, attempt_id: int, *, timeout: float, countdown: float, first: bool
) -> None:
    """Send the step message once the current transaction commits."""
    transaction.on_commit(
        partial(
            _send,
            str(saga_id),
            attempt_id,
            timeout=timeout,
            countdown=countdown,
            priority=PRIORITY_START if first else PRIORITY_CONTINUATION,
        ),
        robust=True,
    )


def send_many_on_commit(items: list[tuple[UUID, int, float]]) -> None:
    """Send continuation messages ``(saga id, attempt id, timeout)`` after commit."""
    if items:
        transaction.on_commit(partial(_send_many, items), robust=True)


def _send_many(items: list[tuple[UUID, int, float]]) -> None:
    from sagas.tasks import step_execute_task

    # One producer (one broker connection) for the whole batch.
    with step_execute_task.app.producer_or_acquire() as producer:
        for saga_id, attempt_id, timeout in items:
            _send(
                str(saga_id),
                attempt_id,
                timeout=timeout,
                countdown=0,
                priority=PRIORITY_CONTINUATION,
                producer=producer,
            )


def _send(
    saga_id: str,
    attempt_id: int,
    *,
    timeout: float,
    countdown: float,
    priority: int,
    producer: Any = None,
) -> None:
    from sagas.tasks import step_execute_task

    options: dict[str, Any] = {
        "priority": priority,
        "soft_time_limit": timeout,
        "time_limit": timeout + conf.get("SAGAS_HARD_LIMIT_GRACE"),
    }
    if countdown:
        options["countdown"] = countdown
    if producer is not None:
        options["producer"] = producer
    try:
        step_execute_task.apply_async(args=(saga_id, attempt_id), **options)
    except Exception:
        # The attempt's wake_at makes the sweeper send it again.
        log.warning(
            "step.dispatch_failed",
            saga_id=saga_id,
            attempt_id=attempt_id,
            exc_info=True,
        )
