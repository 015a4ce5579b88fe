"""The confirmation step: an address that cannot receive mail is an outcome."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from orders.models import Order
from orders.outcomes import order_deliver_confirmation, order_send_confirmation
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
    assert order.confirmation_queued_at is None
    assert mailoutbox == []


def test_valid_address_is_sent_once_and_recorded(mailoutbox: list[Any]) -> None:
    order = _order_for("customer-7")

    saga = run_saga_inline(str(order.saga_id))

    confirmation = StepAttempt.objects.get(saga=saga, step="send_confirmation")
    assert confirmation.result == {"confirmation": "sent"}
    assert [mail.to for mail in mailoutbox] == [["customer-7@customers.example.com"]]


def test_a_queued_confirmation_is_emailed_once_with_its_lines(
    mailoutbox: list[Any],
) -> None:
    order, _ = checkout(
        customer_id="customer-9",
        lines=[LineRequest("WIDGET-1", 2), LineRequest("GADGET-1", 1)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    )
    Order.objects.filter(pk=order.pk).update(confirmation_queued_at=Now())

    with CaptureQueriesContext(connection) as captured:
        first = order_deliver_confirmation(order_id=order.pk.hex)
    again = order_deliver_confirmation(order_id=order.pk)

    assert (first, again) == (True, False)
    [mail] = mailoutbox
    assert mail.subject == f"Order {order.pk} confirmed"
    assert "  2 x WIDGET-1\n  1 x GADGET-1" in mail.body
    assert Order.objects.get(pk=order.pk).confirmation_sent_at is not None
    # The order is locked and read with its lines in one query.
    sent = [query["sql"] for query in captured.captured_queries]
    assert [sql.split()[0] for sql in sent] == ["BEGIN", "SELECT", "UPDATE", "COMMIT"]
    if connection.vendor == "postgresql":
        assert 'FOR UPDATE OF "orders_order"' in sent[1]


def test_queueing_a_confirmation_is_one_statement_and_happens_once(
    mailoutbox: list[Any],
) -> None:
    order, _ = checkout(
        customer_id="customer-11",
        lines=[LineRequest("WIDGET-1", 1)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    )

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        first = order_send_confirmation(order_id=order.pk)
    again = order_send_confirmation(order_id=order.pk)

    assert (first, again) == ("sent", "already_sent")
    assert len(mailoutbox) == 1
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["UPDATE"]
    assert Order.objects.get(pk=order.pk).confirmation_queued_at is not None
    with pytest.raises(Order.DoesNotExist):
        order_send_confirmation(order_id=uuid.uuid4())


def test_an_unqueued_confirmation_is_not_emailed(mailoutbox: list[Any]) -> None:
    order = _order_for("customer-10")

    assert order_deliver_confirmation(order_id=order.pk) is False
    assert mailoutbox == []
