"""Sending step messages to the broker, only ever after a commit.

The broker is a wake-up call, not the source of truth: a message lost here is
found again by the sweeper from the attempt's ``wake_at``. Messages are sent by
task name, so this module needs neither the tasks nor the engine.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

import structlog
from celery import current_app
from celery.utils.nodenames import anon_nodename
from django.db import transaction
from kombu.utils.uuid import uuid

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


def _priorities() -> tuple[int, int]:
    """Return the priorities of a continuation and a first step on this broker."""
    url = str(current_app.conf.broker_url or "")
    if url.split(":", 1)[0] in _AMQP_SCHEMES:
        return AMQP_PRIORITY_CONTINUATION, AMQP_PRIORITY_START
    return PRIORITY_CONTINUATION, PRIORITY_START


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
    """Send step messages now (outside any transaction that decided them).

    One producer (one broker connection) for the whole batch, and on Redis one
    pipeline: a round trip per message dominated a sweeper pass. Other
    transports publish each message at once inside ``batch()``.
    """
    if not sends:
        return
    try:
        with (
            current_app.producer_or_acquire() as producer,
            _publishing(producer.channel),
        ):
            if len(sends) == 1:
                _publish(producer, sends)
            else:
                with producer.batch():
                    _publish(producer, sends)
    except Exception:
        # Some or all of the batch may not have reached the broker; each
        # attempt's wake_at makes the sweeper send it again.
        log.warning(
            "step.dispatch_failed",
            sagas=len(sends),
            attempt_ids=[send.attempt_id for send in sends],
            exc_info=True,
        )


def _publish(producer: Any, sends: list[Send]) -> None:
    """Publish each send as Celery's ``send_task`` would, its setup done once.

    The task message is built and published by Celery's own AMQP helpers
    (``create_task_message``, ``send_task_message``: the publish signals
    tracing relies on still fire); what ``send_task`` repeats per message
    (the task's options, the route, configuration lookups, a result object)
    is worked out once for the batch.
    """
    app = current_app
    amqp = app.amqp
    task = app.tasks.get(STEP_TASK)
    # The options the task was declared with, as send_task merges them.
    exec_options = getattr(task, "_get_exec_options", dict)
    defaults = {
        key: value for key, value in exec_options().items() if value is not None
    }
    ignore_result = defaults.pop("ignore_result", None)
    first_args = (str(sends[0].saga_id), sends[0].attempt_id)
    routed = amqp.router.route(
        defaults,
        STEP_TASK,
        first_args,
        {},
        task,  # type: ignore[arg-type]
    )
    queue = routed.get("queue")
    # Declared once per broker connection (kombu keeps the set): copying and
    # binding the queue only to find it there cost a tenth of a publish.
    declared = (
        queue is not None
        and queue.can_cache_declaration
        and hash(queue) in producer.channel.connection.client.declared_entities
    )
    reply_to = app.thread_oid
    grace = conf.get("SAGAS_HARD_LIMIT_GRACE")
    priorities = _priorities()
    origin = anon_nodename()
    for i, send in enumerate(sends):
        args = (str(send.saga_id), send.attempt_id)
        options = dict(
            routed,
            priority=priorities[send.first],
            # What Celery's saferepr would print, without its cost per message.
            argsrepr=repr(args),
        )
        if i or declared:
            # The first message declares the queue if this connection has
            # not; the rest skip re-binding a copy of it each.
            options["declare"] = []
        message = amqp.create_task_message(
            uuid(),
            STEP_TASK,
            args,
            {},
            send.countdown or None,
            reply_to=reply_to,
            time_limit=send.budget + grace,
            ignore_result=ignore_result,
            # Worked out for every message otherwise.
            kwargsrepr="{}",
            origin=origin,
            **options,
        )
        amqp.send_task_message(producer, STEP_TASK, message, **options)


def _publishing(channel: Any) -> contextlib.AbstractContextManager[Any]:
    """Keep one Redis client for the batch (``sagas.redis_transport``)."""
    publishing = getattr(channel, "publishing", None)
    return contextlib.nullcontext() if publishing is None else publishing()


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
