"""Concurrent checkouts never oversell."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
from inventory.services import stock_release, stock_reserve
from orders.models import Order, OrderStatus
from sagas.testing import wait_for_sagas
from tests.helpers import order_body, post_order

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def test_fifty_concurrent_orders_for_twenty_units_confirm_exactly_twenty(
    start_worker: Any,
) -> None:
    # given: 20 units, and a worker with 4 processes racing for them
    call_command("seed_catalog", stock=20, verbosity=0)
    start_worker("racers", concurrency=4)

    def place(n: int) -> dict[str, Any]:
        try:
            response = post_order(Client(), order_body(customer=f"c{n}"))
            assert response.status_code == 202, response.content
            return response.json()
        finally:
            connection.close()

    # when: 50 requests at once, each for one unit
    with ThreadPoolExecutor(max_workers=10) as pool:
        placed = list(pool.map(place, range(50)))
    wait_for_sagas([p["saga_id"] for p in placed], timeout=90)

    # then
    statuses = list(Order.objects.values_list("status", flat=True))
    assert statuses.count(OrderStatus.CONFIRMED) == 20
    assert statuses.count(OrderStatus.FAILED) == 30
    assert all(
        reason.startswith("Out of stock")
        for reason in Order.objects.filter(status=OrderStatus.FAILED).values_list(
            "failure_reason", flat=True
        )
    )
    widget = Product.objects.get(sku="WIDGET-1")
    assert widget.stock_free == 0
    assert Reservation.objects.filter(status=ReservationStatus.RESERVED).count() == 20


def test_reservations_and_releases_of_the_same_skus_in_any_order_never_deadlock(
    transactional_db: None,
) -> None:
    # given: two orders of the same three SKUs, listed in opposite orders
    call_command("seed_catalog", stock=10_000, verbosity=0)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def racer(items: list[tuple[str, int]]) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait()
                for _ in range(40):
                    saga = uuid.uuid4()
                    stock_reserve(saga_id=saga, items=items)
                    stock_release(saga_id=saga)
            except BaseException as exc:  # a deadlock, reported below
                errors.append(exc)
            finally:
                connections.close_all()

        return run

    # when: four threads reserve and release them over and over
    orders = [
        [("WIDGET-1", 1), ("GIZMO-1", 1), ("GADGET-1", 1)],
        [("GADGET-1", 1), ("GIZMO-1", 1), ("WIDGET-1", 1)],
    ]
    threads = [threading.Thread(target=racer(orders[i % 2])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then: no deadlock (stock is locked in SKU order), and all stock back
    assert errors == []
    assert dict(Product.objects.values_list("sku", "stock_free")) == {
        "WIDGET-1": 10_000,
        "GIZMO-1": 10_000,
        "GADGET-1": 10_000,
    }
