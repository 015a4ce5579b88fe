"""The events sweeper's celery-beat row, installed as beat starts.

Same rule as the engine's sweeper (``sagas.schedule``): created when missing,
an existing row (perhaps edited in the admin) left alone.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import DatabaseError, transaction

from sagas.events import conf

log = structlog.get_logger("sagas.events")

SWEEP_TASK_NAME = "saga events: re-send lost events, flag stuck flows"
SWEEP_TASK = "saga_events.sweep"


def install_sweep_schedule(*, every: float | None = None) -> tuple[Any, str]:
    """Create the events sweep's periodic task if missing; return it and the outcome.

    With ``every``, also set its interval. The outcome is ``installed``,
    ``updated`` or ``kept``.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    seconds = max(1, round(every or float(conf.get("SAGA_EVENTS_SWEEP_INTERVAL"))))
    with transaction.atomic():
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        task, created = PeriodicTask.objects.get_or_create(
            name=SWEEP_TASK_NAME,
            defaults={
                "task": SWEEP_TASK,
                "interval": schedule,
                "expire_seconds": max(seconds * 5, 10),
            },
        )
        if created:
            return task, "installed"
        if every is not None:
            task.interval = schedule
            task.save(update_fields=["interval"])
            return task, "updated"
    return task, "kept"


def on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    """Install the events sweep schedule as beat starts, unless it is there."""
    try:
        task, outcome = install_sweep_schedule()
    except DatabaseError:
        log.exception("events.schedule_not_installed")
        return
    log.info("events.schedule", outcome=outcome, name=task.name)
