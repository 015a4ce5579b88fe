"""Celery entry points of the events app."""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from sagas.events import conf, consumers, outbox, tracker
from sagas.events.envelope import Event

log = structlog.get_logger("sagas.events")


# acks_late is safe because every handler is fenced by its inbox row: a
# message redelivered after a worker died runs only the handlers not done.
@shared_task(
    name=outbox.DELIVER_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
)
def deliver_task(self: Any, body: dict[str, Any]) -> list[str]:
    """Run this service's handlers for one event."""
    try:
        event = Event.from_envelope(body)
    except (KeyError, TypeError, ValueError):
        # Retrying cannot fix a malformed message.
        log.error("event.malformed", body=repr(body)[:500])
        return []
    try:
        return consumers.deliver(event)
    except Exception as exc:
        retries = self.request.retries
        if retries >= int(conf.get("SAGA_EVENTS_MAX_RETRIES")):
            # The flow's tracker deadline will flag it stuck for an operator.
            log.error(
                "event.given_up",
                event_id=str(event.event_id),
                event_type=event.event_type,
                error=str(exc),
            )
            return []
        backoff = float(conf.get("SAGA_EVENTS_RETRY_BACKOFF")) * 2**retries
        raise self.retry(
            exc=exc,
            countdown=min(backoff, float(conf.get("SAGA_EVENTS_RETRY_MAX_BACKOFF"))),
        ) from exc


@shared_task(name="saga_events.sweep", acks_late=True, ignore_result=True)
def sweep_task(batch: int | None = None) -> int:
    """Send events whose send was lost, nudge silent flows, flag stuck ones."""
    resent = outbox.resend_lost(batch=batch)
    resent += outbox.redeliver_silent(batch=batch)
    stuck = tracker.flag_stuck()
    outbox.purge_old()
    consumers.purge_inbox()
    return resent + stuck
