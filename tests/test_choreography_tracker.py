"""The flow tracker and the events sweeper with real worker and beat processes,
and the flows' admin list."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from sagas.events.envelope import Event
from sagas.events.flows import find_flow
from sagas.events.models import Flow, FlowEvent, FlowStatus, OutboxEvent
from sagas.events.outbox import publish
from sagas.events.testing import wait_for_flows
from sagas.events.tracker import track
from tests.sagatest.choreography import SILENT_FLOW

CHANGELIST = "/admin/saga_events/flow/"


def _event(flow_id: uuid.UUID, event_type: str, key: str, seconds: float) -> Event:
    return Event(
        event_id=uuid.uuid4(),
        event_type=event_type,
        payload={"n": seconds},
        occurred_at=timezone.now() + timedelta(seconds=seconds),
        correlation_id=flow_id,
        flow_type="order_checkout",
        flow_key=key,
    )


def test_flow_status_does_not_depend_on_arrival_order() -> None:
    flow = find_flow("order_checkout")
    assert flow is not None
    events = ["order.created", "payment.processed", "inventory.reservation.failed"]

    assert flow.status(events) == FlowStatus.COMPENSATING
    assert flow.status([*reversed(events), "order.failed"]) == FlowStatus.COMPENSATED
    assert flow.status(["order.confirmed", "order.created"]) == FlowStatus.COMPLETED
    assert flow.status(["order.created"]) == FlowStatus.RUNNING


@pytest.mark.django_db(transaction=True, databases="__all__")
@pytest.mark.integration
def test_a_flow_with_no_event_within_its_timeout_is_flagged_stuck(
    worker: Any, start_beat: Any
) -> None:
    # given beat sweeping every second, and a flow (1 s timeout) nobody answers
    start_beat()
    flow_id = uuid.uuid4()
    with transaction.atomic():
        publish("test.started", {}, correlation_id=flow_id, flow_type=SILENT_FLOW)
    wait_for_flows([flow_id], statuses=[FlowStatus.RUNNING], timeout=15)

    # when it stays silent past its timeout
    [flow] = wait_for_flows([flow_id], statuses=[FlowStatus.STUCK], timeout=15)

    # then it is flagged stuck, by the database clock, after its deadline
    assert FlowEvent.objects.filter(flow=flow).count() == 1
    assert flow.stuck_since is not None
    assert flow.deadline is not None
    assert flow.stuck_since >= flow.deadline
    assert flow.last_event_type == "test.started"

    # and an event arriving later puts it back on its way
    with transaction.atomic():
        publish("test.finished", {}, correlation_id=flow_id, flow_type=SILENT_FLOW)
    [flow] = wait_for_flows([flow_id], timeout=15)
    assert flow.status == FlowStatus.COMPLETED
    assert flow.stuck_since is None


@pytest.mark.django_db
def test_tracker_records_each_event_once_in_occurrence_order() -> None:
    # given
    flow_id = uuid.uuid4()
    created = _event(flow_id, "order.created", "order:1", 0)
    failed = _event(flow_id, "payment.failed", "order:1", 1)

    # when the later event arrives first, and each arrives twice
    recorded = [track(failed), track(created), track(failed), track(created)]

    # then
    assert recorded == [True, True, False, False]
    flow = Flow.objects.get(pk=flow_id)
    assert flow.status == FlowStatus.COMPENSATING
    assert flow.business_key == "order:1"
    assert flow.event_count == 2
    assert list(
        FlowEvent.objects.filter(flow=flow).values_list("event_type", flat=True)
    ) == ["order.created", "payment.failed"]


@pytest.mark.django_db
def test_admin_lists_flows_with_filters_and_search(admin_client: Client) -> None:
    # given a completed, a compensating and a stuck flow
    done, undoing, silent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    track(_event(done, "order.created", "order:1001", 0))
    track(_event(done, "order.confirmed", "order:1001", 1))
    track(_event(undoing, "order.created", "order:1002", 0))
    track(_event(undoing, "shipping.failed", "order:1002", 1))
    track(_event(silent, "order.created", "order:2001", 0))
    Flow.objects.filter(pk=silent).update(status=FlowStatus.STUCK)

    # when
    everything = admin_client.get(CHANGELIST)
    by_status = admin_client.get(CHANGELIST, {"status__exact": "completed"})
    stuck = admin_client.get(CHANGELIST, {"stuck": "yes"})
    by_type = admin_client.get(CHANGELIST, {"flow_type": "order_checkout"})
    other_type = admin_client.get(CHANGELIST, {"flow_type": SILENT_FLOW})
    by_id = admin_client.get(CHANGELIST, {"q": str(undoing)})
    by_key = admin_client.get(CHANGELIST, {"q": "order:100"})
    detail = admin_client.get(f"{CHANGELIST}{done}/change/")

    # then
    def keys(response: Any) -> set[str]:
        assert response.status_code == 200
        return {flow.business_key for flow in response.context["cl"].result_list}

    assert keys(everything) == {"order:1001", "order:1002", "order:2001"}
    assert keys(by_status) == {"order:1001"}
    assert keys(stuck) == {"order:2001"}
    assert keys(by_type) == {"order:1001", "order:1002", "order:2001"}
    assert keys(other_type) == set()
    assert keys(by_id) == {"order:1002"}
    assert keys(by_key) == {"order:1001", "order:1002"}
    assert detail.status_code == 200
    page = detail.content.decode()
    timeline = page[page.index("inline-heading") :]
    assert timeline.index("order.created") < timeline.index("order.confirmed")


@pytest.mark.django_db
def test_flows_are_read_only_in_the_admin(admin_client: Client) -> None:
    flow_id = uuid.uuid4()
    track(_event(flow_id, "order.created", "order:1", 0))

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{flow_id}/delete/").status_code == 403
    assert admin_client.get("/admin/saga_events/outboxevent/").status_code == 200
    assert OutboxEvent.objects.count() == 0
