"""HTTP API contract: validation, idempotency, tracking, schema."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from orders.models import Order
from sagas.models import Saga, StepAttempt
from tests.helpers import order_body, post_order

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _catalogue(db: Any) -> None:
    call_command("seed_catalog", stock=10, verbosity=0)


def _fields(response: Any) -> set[str]:
    assert response.status_code == 400, response.content
    return {error["field"] for error in response.json()["errors"]}


def test_checkout_creates_order_and_saga_in_one_transaction(client: Client) -> None:
    response = post_order(client, order_body(items=[("WIDGET-1", 2)]))

    assert response.status_code == 202
    body = response.json()
    order = Order.objects.get(pk=body["id"])
    saga = Saga.objects.get(pk=body["saga_id"])
    assert body["status"] == "pending"
    assert order.total_cents == 2 * 1999
    assert saga.business_key == f"order:{order.pk}"
    assert saga.status == "pending"
    assert saga.context["items"] == [["WIDGET-1", 2]]
    first = StepAttempt.objects.get(saga=saga)
    assert (first.step, first.kind, first.status) == (
        "reserve_stock",
        "action",
        "dispatched",
    )


@pytest.mark.parametrize(
    ("mutate", "fields"),
    [
        (lambda b: b.pop("customer_id"), {"customer_id"}),
        (lambda b: b.update(items=[]), {"items"}),
        (lambda b: b["items"][0].update(quantity=0), {"items.0.quantity"}),
        (lambda b: b["items"][0].update(quantity="2"), {"items.0.quantity"}),
        (lambda b: b["items"][0].update(quantity=1.5), {"items.0.quantity"}),
        (lambda b: b["items"][0].pop("sku"), {"items.0.sku"}),
        (
            lambda b: b["shipping_address"].update(country="XX"),
            {"shipping_address.country"},
        ),
        (
            lambda b: b["shipping_address"].update(country="DEU"),
            {"shipping_address.country"},
        ),
        (lambda b: b["shipping_address"].pop("city"), {"shipping_address.city"}),
        (lambda b: b.update(payment_token=""), {"payment_token"}),
        (
            lambda b: b.update(customer_id="x,victim@evil.example"),
            {"customer_id"},
        ),
        (lambda b: b.update(customer_id="a\nBcc: x@y.z"), {"customer_id"}),
        (lambda b: b.update(customer_id="c" * 65), {"customer_id"}),
        (
            lambda b: b["shipping_address"].update(country="de"),
            {"shipping_address.country"},
        ),
        (lambda b: b["items"][0].update(sku=" WIDGET-1"), {"items.0.sku"}),
        (
            lambda b: b["shipping_address"].update(name="   "),
            {"shipping_address.name"},
        ),
        (
            lambda b: b["shipping_address"].update(city="London\r\nX-Injected: 1"),
            {"shipping_address.city"},
        ),
        (lambda b: b.update(payment_token="tok visa"), {"payment_token"}),
        (lambda b: b.update(unexpected=True), {"unexpected"}),
        (
            lambda b: (b.pop("payment_token"), b["items"][0].update(quantity=-1)),
            {"payment_token", "items.0.quantity"},
        ),
    ],
)
def test_invalid_input_is_a_400_naming_each_field(
    client: Client, mutate: Any, fields: set[str]
) -> None:
    body = order_body()
    mutate(body)

    response = post_order(client, body)

    assert _fields(response) == fields
    assert not Order.objects.exists()
    assert not Saga.objects.exists()


def test_integral_json_numbers_are_quantities(client: Client) -> None:
    body = order_body()
    body["items"][0]["quantity"] = 2.0

    response = post_order(client, body)

    assert response.status_code == 202, response.content
    assert Order.objects.get().lines.get().quantity == 2


@pytest.mark.parametrize("raw", ["{not json", "[]", '"a string"', "null", ""])
def test_malformed_bodies_are_400_not_500(client: Client, raw: str) -> None:
    response = client.post("/api/orders/", raw, content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()
    assert not Order.objects.exists()


def test_unknown_sku_is_a_422_naming_it(client: Client) -> None:
    response = post_order(client, order_body(items=[("WIDGET-1", 1), ("NOPE-9", 1)]))

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "items.1.sku", "message": "unknown SKU: NOPE-9"}
    ]
    assert not Order.objects.exists()


def test_same_idempotency_key_and_body_returns_the_same_order(client: Client) -> None:
    first = post_order(client, order_body(), **{"Idempotency-Key": "k-1"})
    second = post_order(client, order_body(), **{"Idempotency-Key": "k-1"})

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
    assert Saga.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_a_422(client: Client) -> None:
    post_order(client, order_body(), **{"Idempotency-Key": "k-2"})
    response = post_order(
        client, order_body(token="tok_chargeDeclined"), **{"Idempotency-Key": "k-2"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert Order.objects.count() == 1


def test_order_tracking_lists_steps_in_definition_order(client: Client) -> None:
    placed = post_order(client, order_body()).json()

    response = client.get(f"/api/orders/{placed['id']}/")

    assert response.status_code == 200
    body = response.json()
    assert [s["name"] for s in body["steps"]] == [
        "reserve_stock",
        "charge_payment",
        "create_shipment",
        "send_confirmation",
    ]
    assert body["saga_status"] == "pending"
    assert body["failure_reason"] == ""


@pytest.mark.parametrize(
    "path", ["/api/orders/00000000-0000-0000-0000-000000000000/", "/api/orders/42/"]
)
def test_unknown_order_is_404(client: Client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_saga_api_needs_staff_with_view_permission(
    client: Client, django_user_model: Any
) -> None:
    placed = post_order(client, order_body()).json()
    url = f"/api/sagas/{placed['saga_id']}/"

    assert client.get(url).status_code == 401
    user = django_user_model.objects.create_user("clerk", password="pw")
    client.force_login(user)
    assert client.get(url).status_code == 403
    user.is_staff = True
    user.save()
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_saga"))
    user = django_user_model.objects.get(pk=user.pk)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    body = response.json()
    assert body["business_key"] == f"order:{placed['id']}"
    assert [e["new_status"] for e in body["timeline"]] == ["pending", "dispatched"]


def test_openapi_schema_describes_the_endpoints(client: Client) -> None:
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/orders/" in schema["paths"]
    assert "/api/orders/{order_id}/" in schema["paths"]
    assert "/api/sagas/{saga_id}/" in schema["paths"]


def test_idempotency_keys_are_scoped_per_customer(client: Client) -> None:
    # given: a key another customer already used
    first = post_order(client, order_body(customer="alice"), **{"Idempotency-Key": "k"})

    # when: another customer sends the same key, with or without the same lines
    second = post_order(client, order_body(customer="bob"), **{"Idempotency-Key": "k"})

    # then: a new order, nothing revealed, no conflict
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert "Idempotent-Replayed" not in second.headers
    assert Order.objects.count() == 2


def test_idempotency_key_expires_after_the_configured_time(
    client: Client, settings: Any
) -> None:
    # given: a key used longer ago than the retention period
    settings.ORDERS_IDEMPOTENCY_TTL = 3600
    first = post_order(client, order_body(), **{"Idempotency-Key": "old"}).json()
    Order.objects.filter(pk=first["id"]).update(
        created_at=timezone.now() - timedelta(seconds=3601)
    )

    # when: the same customer reuses it, even with another body
    again = post_order(
        client, order_body(items=[("GADGET-1", 1)]), **{"Idempotency-Key": "old"}
    )

    # then: a new order owns the key now
    assert again.status_code == 202, again.content
    assert again.json()["id"] != first["id"]
    assert Order.objects.get(pk=first["id"]).idempotency_key is None
    assert Order.objects.get(pk=again.json()["id"]).idempotency_key == "old"


def test_idempotency_key_within_retention_replays(
    client: Client, settings: Any
) -> None:
    settings.ORDERS_IDEMPOTENCY_TTL = 3600
    first = post_order(client, order_body(), **{"Idempotency-Key": "recent"}).json()
    Order.objects.filter(pk=first["id"]).update(
        created_at=timezone.now() - timedelta(seconds=3500)
    )

    again = post_order(client, order_body(), **{"Idempotency-Key": "recent"})

    assert again.json()["id"] == first["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


def test_payment_token_is_not_stored_on_the_order(client: Client) -> None:
    placed = post_order(client, order_body(token="tok_visa")).json()

    values = Order.objects.filter(pk=placed["id"]).values().get()

    assert "tok_visa" not in json.dumps(values, default=str)
