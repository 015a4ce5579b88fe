"""The order saga's failure table, end to end through the HTTP API, on real
PostgreSQL, Redis and a Celery worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
from payments.models import GatewayCharge, GatewayChargeStatus, Payment, PaymentStatus
from sagas.models import StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from sagas.testing import compensations_run, steps_run, wait_for_sagas
from shipping.models import CarrierBooking, Shipment
from tests.helpers import assert_ledgers_balance, place_order

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def _finish(client: Client, placed: dict[str, Any]) -> dict[str, Any]:
    wait_for_sagas([placed["saga_id"]], timeout=30)
    response = client.get(f"/api/orders/{placed['id']}/")
    assert response.status_code == 200
    return response.json()


def test_happy_path_confirms_and_emails(
    worker: Any, catalogue: None, client: Client, process_env: dict[str, str]
) -> None:
    # given / when
    placed = place_order(client, items=[("WIDGET-1", 2), ("GIZMO-1", 1)])
    order = _finish(client, placed)

    # then
    assert placed["status"] == "pending"
    assert order["status"] == "confirmed"
    assert order["saga_status"] == SagaStatus.COMPLETED
    assert [(s["name"], s["status"], s["attempts"]) for s in order["steps"]] == [
        ("reserve_stock", "succeeded", 1),
        ("charge_payment", "succeeded", 1),
        ("create_shipment", "succeeded", 1),
        ("send_confirmation", "succeeded", 1),
    ]
    assert compensations_run(placed["saga_id"]) == []
    assert Payment.objects.get().amount_cents == 2 * 1999 + 999
    assert Shipment.objects.get().status == "created"
    assert Product.objects.get(sku="WIDGET-1").stock_free == 98
    mails = list(Path(process_env["EMAIL_FILE_PATH"]).glob("*.log"))
    assert any(placed["id"] in mail.read_text() for mail in mails)
    assert_ledgers_balance(initial_stock=100)


def test_out_of_stock_fails_with_nothing_to_compensate(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = place_order(client, items=[("GADGET-1", 101)])
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"].startswith("Out of stock: GADGET-1")
    assert order["saga_status"] == SagaStatus.COMPENSATED
    assert steps_run(placed["saga_id"]) == []
    assert compensations_run(placed["saga_id"]) == []
    assert not Reservation.objects.exists()
    assert not GatewayCharge.objects.exists()
    assert_ledgers_balance(initial_stock=100)


def test_declined_card_releases_inventory(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = place_order(client, token="tok_chargeDeclined", items=[("WIDGET-1", 3)])
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"] == "Payment declined: the card was declined"
    assert order["saga_status"] == SagaStatus.COMPENSATED
    assert steps_run(placed["saga_id"]) == ["reserve_stock"]
    assert compensations_run(placed["saga_id"]) == ["reserve_stock"]
    assert Reservation.objects.get().status == ReservationStatus.RELEASED
    assert not Payment.objects.exists()
    assert GatewayCharge.objects.get().status == GatewayChargeStatus.DECLINED
    assert_ledgers_balance(initial_stock=100)


def test_unsupported_country_refunds_then_releases(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = place_order(client, country="AQ")
    order = _finish(client, placed)

    assert order["status"] == "failed"
    assert order["failure_reason"] == "Cannot ship: the carrier does not deliver to AQ"
    assert steps_run(placed["saga_id"]) == ["reserve_stock", "charge_payment"]
    # Strict reverse order; the refused shipment created nothing to cancel.
    assert compensations_run(placed["saga_id"]) == ["charge_payment", "reserve_stock"]
    assert Payment.objects.get().status == PaymentStatus.REFUNDED
    assert not Shipment.objects.exists()
    assert not CarrierBooking.objects.exists()
    assert_ledgers_balance(initial_stock=100)


def test_processing_error_completes_after_one_visible_retry(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = place_order(client, token="tok_processingError")
    order = _finish(client, placed)

    assert order["status"] == "confirmed"
    charge = next(s for s in order["steps"] if s["name"] == "charge_payment")
    assert charge["attempts"] == 2
    attempts = StepAttempt.objects.filter(
        saga_id=placed["saga_id"], step="charge_payment"
    ).order_by("number")
    assert [(a.number, a.status) for a in attempts] == [
        (1, AttemptStatus.FAILED),
        (2, AttemptStatus.SUCCEEDED),
    ]
    assert "processing error" in attempts[0].error
    assert Payment.objects.get().status == PaymentStatus.CAPTURED
    assert_ledgers_balance(initial_stock=100)


def test_failure_table_together_balances_the_ledgers(
    worker: Any, catalogue: None, client: Client
) -> None:
    placed = [
        place_order(client),
        place_order(client, token="tok_chargeDeclined"),
        place_order(client, country="AQ", items=[("GADGET-1", 2)]),
        place_order(client, items=[("GIZMO-1", 500)]),
        place_order(client, token="tok_processingError", items=[("GIZMO-1", 4)]),
        place_order(client, items=[("WIDGET-1", 1), ("GADGET-1", 1)]),
    ]
    sagas = wait_for_sagas([p["saga_id"] for p in placed], timeout=60)

    assert [s.status for s in sagas] == [
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPLETED,
        SagaStatus.COMPLETED,
    ]
    assert_ledgers_balance(initial_stock=100)
