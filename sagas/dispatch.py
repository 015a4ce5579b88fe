"""Sending step messages to the broker, only ever after a commit.

The broker is a wake-up call, not the source of truth: a message lost here is
found again by the sweeper from the attempt's ``wake_at``. Messages are sent by
task name, so this module needs neither the tasks nor the engine.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

import structlog
from celery import current_app
from django.db import transaction

from sagas import conf

log = structlog.get_logger("sagas.dispatch")

STEP_TASK = "sagas.step_execute"
# The task participants answer a remote step with.
REPLY_TASK = "sagas.step_reply"

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
    url = str(current_app.conf.broker_url or "")
    if url.split(":", 1)[0] in _AMQP_SCHEMES:
        return AMQP_PRIORITY_START if first else AMQP_PRIORITY_CONTINUATION
    return PRIORITY_START if first else PRIORITY_CONTINUATION


class Send(NamedTuple):
    """One step message: which attempt, and how long its task may run.

    ``budget`` is the task's hard time limit (before the grace): the longest
    step it may run plus the time it may spend continuing the saga inline.
    Each step's own timeout is enforced by the worker while it runs the step.
    """

    saga_id: UUID
    attempt_id: int
    budget: float
    countdown: float = 0.0
    first: bool = False


def send_many_on_commit(sends: list[Send]) -> None:
    """Send step messages once the current transaction commits."""
    if sends:
        transaction.on_commit(partial(send_many, sends), robust=True)


def send_many(sends: list[Send]) -> None:
    """Send step messages now (outside any transaction that decided them)."""
    if len(sends) == 1:
        _send(sends[0])
        return
    # One producer (one broker connection) for the whole batch, and on Redis
    # one pipeline: a round trip per message dominated a sweeper pass. Other
    # transports publish each message at once inside ``batch()``.
    with current_app.producer_or_acquire() as producer:
        try:
            with producer.batch():
                for i, send in enumerate(sends):
                    # The first message declares the queue (kombu caches it per
                    # connection); the rest skip re-binding a copy of it each.
                    _send(send, producer=producer, declare=None if i == 0 else [])
        except Exception:
            # Some or all of the batch may not have reached the broker; each
            # attempt's wake_at makes the sweeper send it again.
            log.warning(
                "step.dispatch_failed",
                sagas=len(sends),
                attempt_ids=[send.attempt_id for send in sends],
                exc_info=True,
            )


def _send(send: Send, producer: Any = None, declare: list[Any] | None = None) -> None:
    args = (str(send.saga_id), send.attempt_id)
    options: dict[str, Any] = {
        "priority": _priority(first=send.first),
        "time_limit": send.budget + conf.get("SAGAS_HARD_LIMIT_GRACE"),
        # What Celery's saferepr would print, without its cost per message.
        "argsrepr": repr(args),
    }
    if send.countdown:
        options["countdown"] = send.countdown
    if producer is not None:
        options["producer"] = producer
    if declare is not None:
        options["declare"] = declare
    try:
        current_app.send_task(STEP_TASK, args=args, **options)
    except Exception:
        # The attempt's wake_at makes the sweeper send it again.
        log.warning(
            "step.dispatch_failed",
            saga_id=str(send.saga_id),
            attempt_id=send.attempt_id,
            exc_info=True,
        )


def send_command_on_commit(
    task: str, queue: str | None, kwargs: dict[str, Any]
) -> None:
    """Send a remote step's command to its participant once the transaction commits."""
    transaction.on_commit(partial(_send_command, task, queue, kwargs), robust=True)


def _send_command(task: str, queue: str | None, kwargs: dict[str, Any]) -> None:
    options: dict[str, Any] = {"queue": queue} if queue else {}
    try:
        current_app.send_task(task, kwargs=kwargs, **options)
    except Exception:
        # The attempt's wake_at makes the sweeper send it again.
        log.warning(
            "step.command_failed",
            saga_id=kwargs.get("saga_id"),
            attempt_id=kwargs.get("attempt_id"),
            task=task,
            exc_info=True,
        )
