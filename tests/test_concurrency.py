"""Concurrent checkouts never oversell."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
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
