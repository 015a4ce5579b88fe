"""The order saga's services: what they write, what they refuse, what they send.

Run on PostgreSQL and on the embedded SQLite default (no row locks there).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from inventory.models import Product, Reservation, ReservationStatus
from inventory.services import OutOfStock, UnknownSku, stock_release, stock_reserve
from payments.models import Payment
from payments.services import payment_charge
from shipping.models import Shipment
from shipping.services import shipment_create


@pytest.fixture
def stock(db: Any) -> None:
    call_command("seed_catalog", stock=10, verbosity=0)


def _free() -> dict[str, int]:
    return dict(Product.objects.values_list("sku", "stock_free"))


def test_a_reservation_takes_each_sku_once_and_repeating_it_changes_nothing(
    stock: None,
) -> None:
    saga = uuid.uuid4()

    units = stock_reserve(
        saga_id=saga, items=[("WIDGET-1", 2), ("GIZMO-1", 1), ("WIDGET-1", 1)]
    )
    again = stock_reserve(saga_id=saga, items=[("WIDGET-1", 5)])

    assert units == again == 4
    assert _free() == {"WIDGET-1": 7, "GIZMO-1": 9, "GADGET-1": 10}
    assert sorted(
        Reservation.objects.filter(saga_id=saga).values_list(
            "product__sku", "quantity", "status"
        )
    ) == [
        ("GIZMO-1", 1, ReservationStatus.RESERVED),
        ("WIDGET-1", 3, ReservationStatus.RESERVED),
    ]
    assert all(r.created_at is not None for r in Reservation.objects.all())


def test_a_short_sku_after_one_already_taken_refuses_all_with_the_stock_free(
    stock: None,
) -> None:
    # GADGET-1 is taken first (SKU order), then WIDGET-1 is short.
    with pytest.raises(OutOfStock) as refused:
        stock_reserve(saga_id=uuid.uuid4(), items=[("WIDGET-1", 11), ("GADGET-1", 10)])

    assert str(refused.value) == "WIDGET-1: 11 requested, 10 available"
    assert _free() == {"WIDGET-1": 10, "GIZMO-1": 10, "GADGET-1": 10}
    assert not Reservation.objects.exists()


def test_an_unknown_sku_refuses_the_reservation_naming_it(stock: None) -> None:
    with pytest.raises(UnknownSku) as refused:
        stock_reserve(saga_id=uuid.uuid4(), items=[("GADGET-1", 1), ("NOPE-9", 1)])

    assert refused.value.skus == ["NOPE-9"]
    assert _free()["GADGET-1"] == 10
    assert not Reservation.objects.exists()


def test_a_reservation_sends_three_statements_however_it_is_built(
    stock: None,
) -> None:
    # The idempotency read, then one conditional decrement and one insert per
    # SKU: no read of the products before taking their stock.
    with CaptureQueriesContext(connection) as captured:
        stock_reserve(saga_id=uuid.uuid4(), items=[("WIDGET-1", 1)])

    sent = [
        query["sql"].split()[0]
        for query in captured.captured_queries
        if "SAVEPOINT" not in query["sql"]
    ]
    assert sent == ["SELECT", "UPDATE", "INSERT"]


def test_a_release_gives_back_what_was_reserved_once(stock: None) -> None:
    saga = uuid.uuid4()
    stock_reserve(saga_id=saga, items=[("WIDGET-1", 3), ("GIZMO-1", 2)])

    released = stock_release(saga_id=saga)
    again = stock_release(saga_id=saga)

    assert (released, again) == (5, 0)
    assert _free() == {"WIDGET-1": 10, "GIZMO-1": 10, "GADGET-1": 10}
    assert set(Reservation.objects.values_list("status", flat=True)) == {
        ReservationStatus.RELEASED
    }


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_charge_and_a_shipment_each_read_then_insert_once_with_no_savepoint() -> None:
    # given: a saga step's transaction
    saga = uuid.uuid4()
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        # when: each is called twice with its key
        payment = payment_charge(
            idempotency_key=f"{saga}:charge",
            saga_id=saga,
            reference="order:1",
            amount_cents=1999,
            token="tok_visa",
        )
        shipment = shipment_create(
            idempotency_key=f"{saga}:ship",
            saga_id=saga,
            reference="order:1",
            address={"country": "DE", "city": "Berlin"},
        )
        repeated = (
            payment_charge(
                idempotency_key=f"{saga}:charge",
                saga_id=saga,
                reference="order:1",
                amount_cents=1999,
                token="tok_visa",
            ),
            shipment_create(
                idempotency_key=f"{saga}:ship",
                saga_id=saga,
                reference="order:1",
                address={"country": "DE", "city": "Berlin"},
            ),
        )

    # then: the key read and the insert on this database, nothing else
    first = [q["sql"].split()[0] for q in captured.captured_queries][:4]
    assert first == ["SELECT", "INSERT", "SELECT", "INSERT"]
    assert repeated == (payment, shipment)
    assert Payment.objects.get().gateway_charge_id == payment.gateway_charge_id
    stored = Shipment.objects.get()
    assert (stored.tracking_number, stored.address) == (
        shipment.tracking_number,
        {"country": "DE", "city": "Berlin"},
    )
    assert payment.created_at == Payment.objects.get().created_at
