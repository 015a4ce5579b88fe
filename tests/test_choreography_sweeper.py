"""The events sweeper with real worker and beat processes: events whose send
was lost, and events the broker lost after their send.

No module-wide worker here: every worker consuming the sweep must run with the
test's sweeper settings.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from sagas.events.models import Flow, FlowEvent, OutboxEvent
from sagas.events.outbox import publish
from tests.sagatest.choreography import SILENT_FLOW


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.integration
def test_an_event_whose_send_was_lost_is_sent_by_the_sweeper(
    start_worker: Any, start_beat: Any, settings: Any
) -> None:
    # given an event committed whose after-commit send never happened
    settings.SAGA_EVENTS_RELAY_ON_COMMIT = False
    flow_id = uuid.uuid4()
    with transaction.atomic():
        row = publish("test.started", {}, correlation_id=flow_id, flow_type=SILENT_FLOW)
    time.sleep(0.5)
    assert not FlowEvent.objects.filter(flow_id=flow_id).exists()

    # when the events sweeper runs (lease: 1 s)
    start_worker("resend", SAGA_EVENTS_RELAY_LEASE="1")
    start_beat()

    # then the sweeper sends it and the worker's tracker records it
    deadline = time.monotonic() + 20
    while not FlowEvent.objects.filter(flow_id=flow_id).exists():
        assert time.monotonic() < deadline, "the lost event was never sent"
        time.sleep(0.1)
    row.refresh_from_db()
    assert row.sent_at is not None
    assert row.sends == 1


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.integration
def test_an_event_the_broker_lost_after_its_send_is_sent_again(
    start_worker: Any, start_beat: Any, settings: Any
) -> None:
    # given an event recorded as sent whose message never reached anyone
    settings.SAGA_EVENTS_RELAY_ON_COMMIT = False
    flow_id = uuid.uuid4()
    with transaction.atomic():
        row = publish("test.started", {}, correlation_id=flow_id, flow_type=SILENT_FLOW)
    OutboxEvent.objects.filter(pk=row.pk).update(sent_at=timezone.now(), sends=1)

    # when the sweeper runs, re-sending flows silent for over a second
    start_worker("redeliver", SAGA_EVENTS_REDELIVER_AFTER="1")
    start_beat()

    # then the flow's event is sent again and reaches the tracker
    deadline = time.monotonic() + 20
    while not FlowEvent.objects.filter(flow_id=flow_id).exists():
        assert time.monotonic() < deadline, "the lost event was never sent again"
        time.sleep(0.1)
    assert Flow.objects.get(pk=flow_id).redeliveries >= 1
