"""The tracker: every correlated event in its flow's timeline, and its status.

No service sees a choreographed flow whole; the tracker listens to all of its
events and keeps what operators need: the timeline, a status derived from the
event types seen (so arrival order does not matter), and a deadline after
which a flow that heard nothing is flagged stuck.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from sagas.events import conf
from sagas.events.envelope import Event
from sagas.events.flows import find_flow
from sagas.events.models import Flow, FlowEvent, FlowStatus

log = structlog.get_logger("sagas.events")

OPEN = (FlowStatus.RUNNING, FlowStatus.COMPENSATING)
TERMINAL = (FlowStatus.COMPLETED, FlowStatus.COMPENSATED)


def timeout_of(flow_type: str) -> float:
    """Return the seconds a flow of ``flow_type`` may go without an event."""
    spec = find_flow(flow_type)
    if spec is not None and spec.timeout is not None:
        return spec.timeout
    return float(conf.get("SAGA_EVENTS_FLOW_TIMEOUT"))


def _locked_flow(event: Event) -> Flow:
    assert event.correlation_id is not None
    try:
        with transaction.atomic():
            Flow.objects.get_or_create(
                pk=event.correlation_id,
                defaults={"flow_type": event.flow_type, "business_key": event.flow_key},
            )
    except IntegrityError:
        pass  # created a moment ago by a concurrent delivery of the same flow
    return Flow.objects.select_for_update().get(pk=event.correlation_id)


@transaction.atomic
def track(event: Event) -> bool:
    """Record ``event`` in its flow's timeline once; return False if it was there."""
    flow = _locked_flow(event)
    if FlowEvent.objects.filter(event_id=event.event_id).exists():
        return False
    FlowEvent.objects.create(
        flow=flow,
        event_id=event.event_id,
        event_type=event.event_type,
        payload=event.payload,
        occurred_at=event.occurred_at,
    )
    events = list(
        FlowEvent.objects.filter(flow=flow)
        .order_by("occurred_at", "id")
        .values_list("event_type", flat=True)
    )
    flow_type = flow.flow_type or event.flow_type
    spec = find_flow(flow_type)
    status = spec.status(events) if spec is not None else FlowStatus.RUNNING
    changes: dict[str, object] = {
        "flow_type": flow_type,
        "business_key": flow.business_key or event.flow_key,
        "status": status,
        "last_event_type": events[-1],
        "event_count": len(events),
        "last_event_at": Now(),
        "stuck_since": None,
    }
    if status in TERMINAL:
        changes["deadline"] = None
        if flow.finished_at is None:
            changes["finished_at"] = Now()
    else:
        changes["deadline"] = Now() + timedelta(seconds=timeout_of(flow_type))
    Flow.objects.filter(pk=flow.pk).update(**changes)
    return True


def flag_stuck() -> int:
    """Flag open flows past their deadline as stuck; return how many.

    The deadline is compared with the database clock, as it was set with it.
    """
    flagged = Flow.objects.filter(status__in=OPEN, deadline__lt=Now()).update(
        status=FlowStatus.STUCK, stuck_since=Now()
    )
    if flagged:
        log.warning("flow.stuck", count=flagged)
    return flagged
