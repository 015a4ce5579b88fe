"""The confirmation step: an address that cannot receive mail is an outcome."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from orders.models import Order
from orders.services import LineRequest, checkout
from sagas.models import StepAttempt
from sagas.testing import run_saga_inline

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Street",
    "city": "London",
    "postal_code": "N1 1AA",
    "country": "DE",
}


@pytest.fixture(autouse=True)
def _catalogue() -> None:
    call_command("seed_catalog", stock=10, verbosity=0)


def _order_for(customer_id: str) -> Order:
    order, _ = checkout(
        customer_id=customer_id,
        lines=[LineRequest(sku="WIDGET-1", quantity=1)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    )
    return order


def test_undeliverable_address_completes_the_saga_with_the_outcome_recorded(
    mailoutbox: list[Any],
) -> None:
    # given: an order whose customer id makes no valid address (a row written
    # before the API checked it, or by another client of the service)
    order = _order_for("x,victim@evil.example")

    # when
    saga = run_saga_inline(str(order.saga_id))

    # then: paid and shipped, confirmed, nobody parked, no mail to anyone
    order.refresh_from_db()
    confirmation = StepAttempt.objects.get(saga=saga, step="send_confirmation")
    assert saga.status == "completed"
    assert order.status == "confirmed"
    assert confirmation.status == "succeeded"
    assert confirmation.result == {"confirmation": "undeliverable"}
    assert saga.context["confirmation"] == "undeliverable"
    assert order.confirmation_sent_at is None
    assert mailoutbox == []


def test_valid_address_is_sent_once_and_recorded(mailoutbox: list[Any]) -> None:
    order = _order_for("customer-7")

    saga = run_saga_inline(str(order.saga_id))

    confirmation = StepAttempt.objects.get(saga=saga, step="send_confirmation")
    assert confirmation.result == {"confirmation": "sent"}
    assert [mail.to for mail in mailoutbox] == [["customer-7@customers.example.com"]]
