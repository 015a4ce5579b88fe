"""The events sweeper's celery-beat row, installed as beat starts.

Same rule as the engine's sweeper (``sagas.schedule``): created when missing,
an existing row (perhaps edited in the admin) left alone.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.db import DatabaseError

from sagas.events import conf
from sagas.schedule import install_periodic

log = structlog.get_logger("sagas.events")

SWEEP_TASK_NAME = "saga events: re-send lost events, flag stuck flows"
SWEEP_TASK = "saga_events.sweep"


def install_sweep_schedule(*, every: float | None = None) -> tuple[Any, str]:
    """Create the events sweep's periodic task if missing; return it and the outcome.

    With ``every``, also set its interval. The outcome is ``installed``,
    ``updated`` or ``kept``.
    """
    return install_periodic(
        SWEEP_TASK_NAME,
        SWEEP_TASK,
        default_every=float(conf.get("SAGA_EVENTS_SWEEP_INTERVAL")),
        every=every,
    )


def on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    """Install the events sweep schedule as beat starts, unless it is there."""
    try:
        task, outcome = install_sweep_schedule()
    except DatabaseError:
        log.exception("events.schedule_not_installed")
        return
    log.info("events.schedule", outcome=outcome, name=task.name)
