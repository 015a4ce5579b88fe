"""Choreography under hostile delivery: every event delivered twice and out of
order, by a relay the test plays itself, to a real worker; each effect once."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
from sagas.events.models import Flow, FlowStatus, InboxEntry, OutboxEvent
from sagas.events.outbox import publish
from sagas.events.testing import wait_for_flows
from tests.choreography_support import (
    assert_each_effect_once,
    assert_orders_match_flows,
    deliver,
    wait_for_idle_queue,
)
from tests.helpers import place_order

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

# The worker writes events but never sends them: the test is the relay.
NO_RELAY = {"SAGA_EVENTS_RELAY_ON_COMMIT": "false"}
KINDS: list[dict[str, Any]] = [
    {},
    {"token": "tok_chargeDeclined"},
    {"country": "AQ"},
    {"items": [("GIZMO-1", 500)]},
    {"token": "tok_processingError"},
]


@pytest.fixture
def no_relay(settings: Any) -> None:
    settings.SAGA_EVENTS_RELAY_ON_COMMIT = False


def _claim_unsent() -> list[OutboxEvent]:
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update().filter(sent_at__isnull=True)
        )
        OutboxEvent.objects.filter(pk__in=[r.pk for r in rows]).update(sent_at=Now())
    return rows


def test_events_delivered_twice_and_out_of_order_take_effect_once(
    no_relay: None,
    start_worker: Any,
    catalogue: None,
    client: Client,
    process_env: dict[str, str],
    artifacts_dir: Path,
) -> None:
    # given a worker that relays nothing, and 25 orders across the failure table
    start_worker("hostile-relay", **NO_RELAY)
    placed = [
        place_order(client, mode="choreography", **KINDS[n % len(KINDS)])
        for n in range(25)
    ]
    flow_ids = [p["saga_id"] for p in placed]
    rng = random.Random(10)
    history: list[OutboxEvent] = []
    deliveries = 0

    # when each new event is sent twice, shuffled with replays of older ones,
    # until every flow has ended
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fresh = _claim_unsent()
        if (
            not fresh
            and not Flow.objects.filter(pk__in=flow_ids)
            .exclude(status__in=[FlowStatus.COMPLETED, FlowStatus.COMPENSATED])
            .exists()
        ):
            break
        history.extend(fresh)
        batch = fresh * 2 + rng.sample(history, min(len(history), 10))
        rng.shuffle(batch)
        for row in batch:
            deliver(row)
        deliveries += len(batch)
        time.sleep(0.2)
    # ...and finally every event of every flow once more, in reverse
    for row in reversed(history):
        deliver(row)
    deliveries += len(history)
    wait_for_idle_queue(process_env["CELERY_BROKER_URL"])
    flows = wait_for_flows(flow_ids, timeout=5)

    # then every flow ended as in the failure table, and each effect is single
    expected = {
        0: FlowStatus.COMPLETED,
        1: FlowStatus.COMPENSATED,
        2: FlowStatus.COMPENSATED,
        3: FlowStatus.COMPENSATED,
        4: FlowStatus.COMPLETED,
    }
    assert [f.status for f in flows] == [
        expected[n % len(KINDS)] for n in range(len(placed))
    ]
    assert_orders_match_flows(placed)
    figures = assert_each_effect_once()
    assert deliveries >= 2 * len(history)
    # Every handler ran once per event, however often the event came.
    assert InboxEntry.objects.count() == len(
        {(e.consumer, e.event_id) for e in InboxEntry.objects.all()}
    )
    path = artifacts_dir / "chaos.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["choreography_duplicated_reordered"] = {
        "flows": len(flows),
        "events": len(history),
        "deliveries": deliveries,
        **figures,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def test_release_arriving_before_its_reservation_leaves_no_stock_held(
    no_relay: None, start_worker: Any, catalogue: None, client: Client
) -> None:
    # given an order whose payment went through, but whose events are late
    start_worker("reorder", **NO_RELAY)
    placed = place_order(client, mode="choreography", items=[("WIDGET-1", 5)])
    flow_id = placed["saga_id"]
    created = OutboxEvent.objects.get(correlation_id=flow_id)
    with transaction.atomic():
        release = publish(
            "inventory.release.requested",
            {"order_id": placed["id"]},
            correlation_id=flow_id,
            flow_type="order_checkout",
        )
        processed = publish(
            "payment.processed",
            {**created.payload, "payment_id": 0},
            correlation_id=flow_id,
            flow_type="order_checkout",
        )

    # when the compensation is delivered first, then the event it undoes
    deliver(release)
    _wait_for_inbox("inventory", release.pk)
    deliver(processed)
    _wait_for_inbox("inventory", processed.pk)

    # then nothing is held: the late reservation did not happen
    assert not Reservation.objects.filter(status=ReservationStatus.RESERVED).exists()
    assert Product.objects.get(sku="WIDGET-1").stock_free == 100
    assert not OutboxEvent.objects.filter(
        correlation_id=flow_id, event_type="inventory.reserved"
    ).exists()


def _wait_for_inbox(consumer: str, event_id: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if InboxEntry.objects.filter(consumer=consumer, event_id=event_id).exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{consumer} did not handle {event_id} in {timeout}s")
