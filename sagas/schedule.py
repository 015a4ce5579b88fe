"""The sweeper's celery-beat row and its heartbeat.

Crash recovery depends on the sweep task running; it must not depend on a
command someone has to remember. Every beat process installs the sweep
schedule as it starts (``beat_init``) when the row is missing, and leaves an
existing row alone, so an interval changed in the admin survives restarts
(unlike ``beat_schedule`` in settings, which django-celery-beat writes over
the row at every start: django-celery-beat#153). Each finished sweep pass
stamps a heartbeat row with the database clock, which the system check and
the admin read.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now

from sagas import conf
from sagas.models import SweeperHeartbeat

log = structlog.get_logger("sagas.schedule")

SWEEP_TASK_NAME = "sagas: sweep timeouts, retries and lost steps"
SWEEP_TASK = "sagas.sweep"
HEARTBEAT = "sweep"


def install_sweep_schedule(*, every: float | None = None) -> tuple[Any, str]:
    """Create the sweep's periodic task if missing; return it and what was done.

    With ``every``, also set its interval; without, leave an existing row as
    an operator may have edited it. The outcome is ``installed``,
    ``updated`` or ``kept``.
    """
    return install_periodic(
        SWEEP_TASK_NAME,
        SWEEP_TASK,
        default_every=conf.get("SAGAS_SWEEP_INTERVAL"),
        every=every,
    )


def install_periodic(
    name: str, task_name: str, *, default_every: float, every: float | None
) -> tuple[Any, str]:
    """Create the periodic task ``name`` if missing; see install_sweep_schedule."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    seconds = max(1, round(every or default_every))
    with transaction.atomic():
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        task, created = PeriodicTask.objects.get_or_create(
            name=name,
            defaults={
                "task": task_name,
                "interval": schedule,
                # A sweep that waited longer than this is stale: the next is due.
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
    """Install the sweep schedule as beat starts, unless it is already there."""
    try:
        task, outcome = install_sweep_schedule()
    except DatabaseError:
        # Not migrated yet: beat keeps running; the check reports the silence.
        log.exception("sweeper.schedule_not_installed")
        return
    log.info(
        "sweeper.schedule",
        outcome=outcome,
        name=task.name,
        enabled=task.enabled,
        every=str(task.interval) if task.interval_id else None,
    )


def record_sweep(handled: int) -> None:
    """Stamp the sweeper's heartbeat with the database clock."""
    updated = SweeperHeartbeat.objects.filter(name=HEARTBEAT).update(
        swept_at=Now(), handled=handled, passes=F("passes") + 1
    )
    if updated:
        return
    try:
        with transaction.atomic():
            SweeperHeartbeat.objects.create(
                name=HEARTBEAT, swept_at=Now(), handled=handled, passes=1
            )
    except IntegrityError:
        # Another sweeper created it a moment ago; its stamp is as fresh.
        pass
