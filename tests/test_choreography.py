"""The order flow by choreography, end to end through the HTTP API, on real
PostgreSQL, Redis and a Celery worker process: the same failure table and
ledger invariants as the orchestrated saga."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
from orders.models import Order
from payments.models import GatewayCharge, GatewayChargeStatus, Payment, PaymentStatus
from sagas.events.models import FlowStatus, InboxEntry, OutboxEvent
from sagas.events.testing import timeline, wait_for_flows
from sagas.testing import wait_for_sagas
from shipping.models import CarrierBooking, Shipment
from tests.helpers import assert_ledgers_balance, order_body, place_order, post_order

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def _place(client: Client, **kwargs: Any) -> dict[str, Any]:
    return place_order(client, **kwargs, mode="choreography")


def _finish(client: Client, placed: dict[str, Any]) -> dict[str, Any]:
    wait_for_flows([placed["saga_id"]], timeout=30)
    response = client.get(f"/api/orders/{placed['id']}/")
    assert response.status_code == 200
    return response.json()


def test_happy_path_confirms_and_emails(
    worker: Any, catalogue: None, client: Client, process_env: dict[str, str]
) -> None:
    # given / when
    placed = _place(client, items=[("WIDGET-1", 2), ("GIZMO-1", 1)])
    order = _finish(client, placed)

    # then
    assert placed["status"] == "pending"
    assert placed["mode"] == "choreography"
    assert order["status"] == "confirmed"
    assert order["saga_status"] == FlowStatus.COMPLETED
    assert order["steps"] == []
    assert [e["event_type"] for e in order["events"]] == [
        "order.created",
        "payment.processed",
        "inventory.reserved",
        "shipment.created",
        "order.confirmed",
    ]
    assert Payment.objects.get().amount_cents == 2 * 1999 + 999
    assert Shipment.objects.get().status == "created"
    assert Product.objects.get(sku="WIDGET-1").stock_free == 98
    mails = list(Path(process_env["EMAIL_FILE_PATH"]).glob("*.log"))
    assert any(placed["id"] in mail.read_text() for mail in mails)
    # Every event was sent once after its commit; none waited for the sweeper.
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    assert_ledgers_balance(initial_stock=100)


def test_out_of_stock_refunds_the_charge(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = _place(client, items=[("GADGET-1", 101)])
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"].startswith("Out of stock: GADGET-1")
    assert order["saga_status"] == FlowStatus.COMPENSATED
    # Payment comes first in this flow, so the charge is given back.
    assert timeline(placed["saga_id"]) == [
        "order.created",
        "payment.processed",
        "inventory.reservation.failed",
        "payment.refunded",
        "order.failed",
    ]
    assert not Reservation.objects.exists()
    assert Payment.objects.get().status == PaymentStatus.REFUNDED
    assert_ledgers_balance(initial_stock=100)


def test_declined_card_fails_with_nothing_taken(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = _place(client, token="tok_chargeDeclined", items=[("WIDGET-1", 3)])
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"] == "Payment declined: the card was declined"
    assert order["saga_status"] == FlowStatus.COMPENSATED
    assert timeline(placed["saga_id"]) == [
        "order.created",
        "payment.failed",
        "order.failed",
    ]
    assert not Reservation.objects.exists()
    assert not Payment.objects.exists()
    assert GatewayCharge.objects.get().status == GatewayChargeStatus.DECLINED
    assert_ledgers_balance(initial_stock=100)


def test_unsupported_country_refunds_and_releases(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = _place(client, country="AQ")
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"] == "Cannot ship: the carrier does not deliver to AQ"
    events = timeline(placed["saga_id"])
    assert events[:4] == [
        "order.created",
        "payment.processed",
        "inventory.reserved",
        "shipping.failed",
    ]
    # Both compensations ran (in either order) before the order failed.
    assert sorted(events[4:-1]) == [
        "inventory.release.requested",
        "inventory.released",
        "payment.refund.requested",
        "payment.refunded",
    ]
    assert events[-1] == "order.failed"
    assert Payment.objects.get().status == PaymentStatus.REFUNDED
    assert Reservation.objects.get().status == ReservationStatus.RELEASED
    assert not Shipment.objects.exists()
    assert not CarrierBooking.objects.exists()
    assert_ledgers_balance(initial_stock=100)


def test_processing_error_completes_after_a_retried_delivery(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = _place(client, token="tok_processingError")
    order = _finish(client, placed)

    assert order["status"] == "confirmed"
    charge = GatewayCharge.objects.get()
    assert charge.processing_errors == 1
    assert charge.status == GatewayChargeStatus.CAPTURED
    assert Payment.objects.get().status == PaymentStatus.CAPTURED
    # The failed delivery left no inbox row: the retry is what charged.
    assert (
        InboxEntry.objects.filter(
            consumer="payments", event_type="order.created"
        ).count()
        == 1
    )
    assert_ledgers_balance(initial_stock=100)


def test_failure_table_together_balances_the_ledgers(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = [
        _place(client),
        _place(client, token="tok_chargeDeclined"),
        _place(client, country="AQ", items=[("GADGET-1", 2)]),
        _place(client, items=[("GIZMO-1", 500)]),
        _place(client, token="tok_processingError", items=[("GIZMO-1", 4)]),
        _place(client, items=[("WIDGET-1", 1), ("GADGET-1", 1)]),
    ]
    flows = wait_for_flows([p["saga_id"] for p in placed], timeout=60)

    assert [f.status for f in flows] == [
        FlowStatus.COMPLETED,
        FlowStatus.COMPENSATED,
        FlowStatus.COMPENSATED,
        FlowStatus.COMPENSATED,
        FlowStatus.COMPLETED,
        FlowStatus.COMPLETED,
    ]
    statuses = dict(Order.objects.values_list("saga_id", "status"))
    assert [statuses[f.pk] for f in flows] == [
        "confirmed",
        "failed",
        "failed",
        "failed",
        "confirmed",
        "confirmed",
    ]
    assert_ledgers_balance(initial_stock=100)


def test_mode_header_and_setting_select_the_flow(
    worker: Any, catalogue: None, client: Client, settings: Any
) -> None:
    # given the header, then the setting
    by_header = post_order(client, order_body(), **{"X-Saga-Mode": "choreography"})
    settings.ORDERS_FLOW = "choreography"
    by_setting = post_order(client, order_body(customer="customer-2"))
    settings.ORDERS_FLOW = "orchestration"
    by_default = post_order(client, order_body(customer="customer-3"))

    # then
    assert by_header.status_code == by_setting.status_code == 202
    assert by_header.json()["mode"] == "choreography"
    assert by_setting.json()["mode"] == "choreography"
    assert by_default.json()["mode"] == "orchestration"
    wait_for_flows([by_header.json()["saga_id"], by_setting.json()["saga_id"]])
    # Every flow this test started ends inside it: a saga still running when
    # the tables are emptied would hold locks the truncation waits on.
    wait_for_sagas([by_default.json()["saga_id"]])


def test_unknown_mode_is_a_400_naming_the_field(
    catalogue: None, client: Client
) -> None:
    in_body = post_order(client, {**order_body(), "mode": "telepathy"})
    in_header = post_order(client, order_body(), **{"X-Saga-Mode": "telepathy"})

    assert in_body.status_code == 400
    assert in_body.json()["errors"][0]["field"] == "mode"
    assert in_header.status_code == 400
    assert in_header.json()["errors"][0]["field"] == "X-Saga-Mode"
    assert not Order.objects.exists()


def test_openapi_documents_the_mode(client: Client) -> None:
    schema = client.get("/api/openapi.json").json()
    operation = schema["paths"]["/api/orders/"]["post"]

    assert "X-Saga-Mode" in {p["name"] for p in operation["parameters"]}
    assert "mode" in schema["components"]["schemas"]["OrderIn"]["properties"]
