"""The transactional outbox: publish in the business transaction, send after.

``publish`` writes a row in the caller's transaction, so an event exists if
and only if that transaction commits. The row is sent once the transaction
commits (``relay``); a send lost between commit and broker (a crash, a broker
outage) leaves the row unsent, and the sweeper sends it. Consumers therefore
see each event at least once, and their inboxes make that exactly one effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

import structlog
from celery import current_app
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from sagas.events import conf
from sagas.events.envelope import Event, current_event
from sagas.events.models import Flow, FlowStatus, OutboxEvent
from sagas.events.tracker import timeout_of

log = structlog.get_logger("sagas.events")

DELIVER_TASK = "saga_events.deliver"


def publish(
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    correlation_id: UUID | str | None = None,
    flow_type: str | None = None,
    flow_key: str | None = None,
) -> OutboxEvent:
    """Write an event to the outbox; it is sent when the transaction commits.

    Call it inside the transaction that makes the change the event announces.
    Inside a handler, the correlation id, flow type and key default to those
    of the event being handled, so a flow's events stay correlated.
    """
    handling = current_event.get()
    if correlation_id is None and handling is not None:
        correlation_id = handling.correlation_id
    if flow_type is None:
        flow_type = handling.flow_type if handling is not None else ""
    if flow_key is None:
        flow_key = handling.flow_key if handling is not None else ""
    correlation = UUID(str(correlation_id)) if correlation_id else None
    row = OutboxEvent.objects.create(
        event_type=event_type,
        payload=dict(payload or {}),
        correlation_id=correlation,
        flow_type=flow_type,
        flow_key=flow_key,
    )
    if correlation is not None and flow_type and conf.get("SAGA_EVENTS_TRACK"):
        # The flow exists from its first event's commit, so that a flow whose
        # first delivery is lost is seen, re-sent and, failing that, stuck.
        Flow.objects.bulk_create(
            [Flow(pk=correlation, flow_type=flow_type, business_key=flow_key)],
            ignore_conflicts=True,
        )
        # A flow that never hears its first event is stuck after its timeout.
        Flow.objects.filter(pk=correlation, deadline__isnull=True).update(
            deadline=Now() + timedelta(seconds=timeout_of(flow_type))
        )
    if conf.get("SAGA_EVENTS_RELAY_ON_COMMIT"):
        transaction.on_commit(partial(relay, [row.pk]), robust=True)
    return row


def event_of(row: OutboxEvent) -> Event:
    """Return the event an outbox row holds."""
    return Event(
        event_id=row.pk,
        event_type=row.event_type,
        payload=row.payload,
        occurred_at=row.created_at,
        correlation_id=row.correlation_id,
        flow_type=row.flow_type,
        flow_key=row.flow_key,
    )


def send(rows: Iterable[OutboxEvent], producer: Any = None) -> list[UUID]:
    """Send events to every consumer queue; return the ids sent everywhere."""
    sent = []
    queues = list(conf.get("SAGA_EVENTS_QUEUES"))
    for row in rows:
        body = event_of(row).to_envelope()
        try:
            for queue in queues:
                current_app.send_task(
                    DELIVER_TASK, args=(body,), queue=queue, producer=producer
                )
        except Exception:
            # The row stays unsent; the sweeper sends it again (to every
            # queue: consumers' inboxes absorb the repeat).
            log.warning("event.send_failed", event_id=str(row.pk), exc_info=True)
            continue
        sent.append(row.pk)
    return sent


def relay(event_ids: list[UUID]) -> int:
    """Send committed, unsent events now; return how many were sent."""
    rows = list(OutboxEvent.objects.filter(pk__in=event_ids, sent_at__isnull=True))
    if not rows:
        return 0
    with current_app.producer_or_acquire() as producer:
        sent = send(rows, producer=producer)
    _mark_sent(sent)
    return len(sent)


def _mark_sent(event_ids: list[UUID]) -> None:
    if event_ids:
        OutboxEvent.objects.filter(pk__in=event_ids).update(
            sent_at=Now(), sends=F("sends") + 1
        )


def resend_lost(*, batch: int | None = None) -> int:
    """Send events committed over a lease ago and still unsent; return the count.

    Rows are claimed with SKIP LOCKED, so two sweepers (two beats) never send
    the same row in the same pass.
    """
    size = int(batch or conf.get("SAGA_EVENTS_SWEEP_BATCH"))
    lease = timedelta(seconds=float(conf.get("SAGA_EVENTS_RELAY_LEASE")))
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(sent_at__isnull=True, created_at__lt=Now() - lease)
            .order_by("created_at")[:size]
        )
        if not rows:
            return 0
        with current_app.producer_or_acquire() as producer:
            sent = send(rows, producer=producer)
        _mark_sent(sent)
    if sent:
        log.info("event.resent", count=len(sent))
    return len(sent)


def redeliver_silent(*, batch: int | None = None) -> int:
    """Send again the events of open flows silent for a while; return the flows.

    Once sent, an event's delivery is the broker's; a broker can still lose
    one (a worker killed between taking a message and recording it). The
    flow's silence shows it: its events go out again, and every consumer's
    inbox lets through only what it had not handled.
    """
    size = int(batch or conf.get("SAGA_EVENTS_SWEEP_BATCH"))
    after = timedelta(seconds=float(conf.get("SAGA_EVENTS_REDELIVER_AFTER")))
    with transaction.atomic():
        flows = list(
            Flow.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[
                    FlowStatus.RUNNING,
                    FlowStatus.COMPENSATING,
                    FlowStatus.STUCK,
                ],
                last_event_at__lt=Now() - after,
                redeliveries__lt=int(conf.get("SAGA_EVENTS_MAX_REDELIVERIES")),
            )
            .filter(
                Q(redelivered_at__isnull=True) | Q(redelivered_at__lt=Now() - after)
            )
            .order_by("last_event_at")
            .values_list("pk", flat=True)[:size]
        )
        if not flows:
            return 0
        rows = list(
            OutboxEvent.objects.filter(
                correlation_id__in=flows, sent_at__isnull=False
            ).order_by("created_at")
        )
        with current_app.producer_or_acquire() as producer:
            send(rows, producer=producer)
        Flow.objects.filter(pk__in=flows).update(
            redeliveries=F("redeliveries") + 1, redelivered_at=Now()
        )
    log.warning("flow.redelivered", flows=len(flows), events=len(rows))
    return len(flows)


def purge_old(*, days: float | None = None) -> int:
    """Delete sent outbox rows older than the retention; return how many."""
    keep = float(days if days is not None else conf.get("SAGA_EVENTS_RETENTION_DAYS"))
    cutoff = timezone.now() - timedelta(days=keep)
    deleted, _ = OutboxEvent.objects.filter(
        sent_at__isnull=False, sent_at__lt=cutoff
    ).delete()
    return deleted
