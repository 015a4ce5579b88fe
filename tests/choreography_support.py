"""Shared checks for the choreography integration tests."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis
from celery import current_app
from django.db.models import Count

from inventory.models import Reservation
from orders.models import Order, OrderStatus
from orders.outcomes import confirmations_deliver
from payments.models import GatewayLedgerEntry, Payment
from sagas.events.models import Flow, FlowStatus, OutboxEvent
from sagas.events.outbox import DELIVER_TASK, event_of
from shipping.models import CarrierBooking, Shipment
from tests.helpers import assert_ledgers_balance


def deliver(row: OutboxEvent, *, queue: str = "celery") -> None:
    """Send an outbox row's event to the worker, as the relay would."""
    current_app.send_task(
        DELIVER_TASK, args=(event_of(row).to_envelope(),), queue=queue
    )


def _deliveries_in_flight(client: redis.Redis) -> int:
    # Waiting messages (every priority list of every queue) and unacked ones,
    # including those of killed workers not yet restored.
    pending = 0
    for key in client.scan_iter("celery*"):
        if client.type(key) == b"list":
            pending += sum(
                DELIVER_TASK.encode() in item for item in client.lrange(key, 0, -1)
            )
    pending += sum(DELIVER_TASK.encode() in item for item in client.hvals("unacked"))
    return pending


def wait_for_idle_queue(url: str, *, timeout: float = 60) -> None:
    """Wait until no event delivery is queued or unacked, for a second."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if not _deliveries_in_flight(client):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise AssertionError(
        f"deliveries not quiet for a second within {timeout}s "
        f"({_deliveries_in_flight(client)} in flight now)"
    )


def assert_each_effect_once() -> dict[str, int]:
    """Assert no effect happened twice and the ledgers balance; return figures."""
    captures = (
        GatewayLedgerEntry.objects.filter(amount_cents__gt=0)
        .values("charge_id")
        .annotate(n=Count("id"))
    )
    refunds = (
        GatewayLedgerEntry.objects.filter(amount_cents__lt=0)
        .values("charge_id")
        .annotate(n=Count("id"))
    )
    double_captures = [row for row in captures if row["n"] > 1]
    double_refunds = [row for row in refunds if row["n"] > 1]
    assert not double_captures, f"captured twice: {double_captures}"
    assert not double_refunds, f"refunded twice: {double_refunds}"
    assert Payment.objects.count() == len(captures)
    # One shipment and one booking per flow at most; one reservation per SKU.
    shipments = Counter(Shipment.objects.values_list("saga_id", flat=True))
    assert max(shipments.values(), default=0) <= 1
    assert CarrierBooking.objects.count() == Shipment.objects.count()
    reservations = Counter(Reservation.objects.values_list("saga_id", "product_id"))
    assert max(reservations.values(), default=0) <= 1
    # Each handler published its events once: no event type twice in a flow.
    published = (
        OutboxEvent.objects.values("correlation_id", "event_type")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not published, f"published twice: {list(published)[:5]}"
    # Every confirmed order has its confirmation queued. A worker killed after
    # queueing one and before emailing it leaves it to the periodic task, which
    # beat runs every minute for those queued over a minute ago: run it now.
    confirmed = Order.objects.filter(status=OrderStatus.CONFIRMED)
    queued = confirmed.filter(confirmation_queued_at__isnull=False).count()
    assert queued == confirmed.count(), (queued, confirmed.count())
    late = confirmations_deliver(older_than=0)
    emails = Order.objects.filter(confirmation_sent_at__isnull=False).count()
    assert emails == confirmed.count(), (emails, confirmed.count(), late)
    assert_ledgers_balance(initial_stock=100)
    return {
        "duplicated_effects": len(double_captures) + len(double_refunds),
        "captures": len(captures),
        "refunds": len(refunds),
    }


def assert_orders_match_flows(placed: list[dict[str, Any]]) -> None:
    """Assert every order ended as its flow did."""
    expected: dict[str, str] = {
        FlowStatus.COMPLETED: OrderStatus.CONFIRMED,
        FlowStatus.COMPENSATED: OrderStatus.FAILED,
    }
    flows: dict[Any, str] = dict(Flow.objects.values_list("pk", "status"))
    for order in Order.objects.filter(pk__in=[p["id"] for p in placed]):
        assert order.status == expected[flows[order.saga_id]], order.pk
