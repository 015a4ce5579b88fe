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

# A saga already in flight moves ahead of sagas not yet started, so a burst does
# not stretch every saga's latency to the whole drain time. Redis serves
# priority 0 first; AMQP (RabbitMQ, a queue with x-max-priority) the highest.
PRIORITY_CONTINUATION = 0
PRIORITY_START = 6
AMQP_PRIORITY_CONTINUATION = 9
AMQP_PRIORITY_START = 3
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def _priority(*, first: bool) -> int:
    """Return the priority for a first step or a continuation on this broker."""
    from sagas.tasks import step_execute_task

    url = str(step_execute_task.app.conf.broker_url or "")
    if url.split(":", 1)[0] in _AMQP_SCHEMES:
        return AMQP_PRIORITY_START if first else AMQP_PRIORITY_CONTINUATION
    return PRIORITY_START if first else PRIORITY_CONTINUATION


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
            priority=_priority(first=first),
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
                priority=_priority(first=False),
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
