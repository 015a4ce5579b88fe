"""Shared helpers for the integration tests."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Sum
from django.test import Client

from inventory.models import Product, Reservation, ReservationStatus
from orders.models import Order, OrderStatus
from payments.models import GatewayLedgerEntry


def order_body(
    *,
    token: str = "tok_visa",
    country: str = "DE",
    items: list[tuple[str, int]] | None = None,
    customer: str = "customer-1",
    mode: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer,
        "items": [
            {"sku": sku, "quantity": qty} for sku, qty in (items or [("WIDGET-1", 1)])
        ],
        "payment_token": token,
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "1 Analytical Street",
            "city": "London",
            "postal_code": "N1 1AA",
            "country": country,
        },
    }
    if mode is not None:
        body["mode"] = mode
    return body


def post_order(client: Client, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/api/orders/",
        json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def place_order(client: Client, **kwargs: Any) -> dict[str, Any]:
    response = post_order(client, order_body(**kwargs))
    assert response.status_code == 202, response.content
    return response.json()


def assert_ledgers_balance(initial_stock: int) -> None:
    """Assert money kept equals confirmed totals and every unit is accounted for."""
    captured = (
        GatewayLedgerEntry.objects.aggregate(total=Sum("amount_cents"))["total"] or 0
    )
    confirmed = (
        Order.objects.filter(status=OrderStatus.CONFIRMED).aggregate(
            total=Sum("total_cents")
        )["total"]
        or 0
    )
    assert captured == confirmed, (
        f"gateway kept {captured}, confirmed orders total {confirmed}"
    )
    for product in Product.objects.all():
        held = (
            Reservation.objects.filter(
                product=product, status=ReservationStatus.RESERVED
            ).aggregate(total=Sum("quantity"))["total"]
            or 0
        )
        assert product.stock_free + held == initial_stock, (
            f"{product.sku}: {product.stock_free} free + {held} held != {initial_stock}"
        )
