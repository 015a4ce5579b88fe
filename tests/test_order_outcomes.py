"""An order's status follows its saga's to every end, operators' included.

The order saga runs inline (``sagas.testing.run_saga_inline``) through the
real engine on PostgreSQL; faults come from the sandbox gateway's fault table
or from a domain call made to raise.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from orders import sagas as order_sagas
from orders.models import Order, OrderStatus
from payments.models import GatewayFault
from sagas import engine
from sagas.states import SagaStatus
from sagas.testing import run_saga_inline
from tests.helpers import place_order

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _place(client: Client, **kwargs: Any) -> tuple[Order, Any]:
    placed = place_order(client, **kwargs)
    saga = run_saga_inline(placed["saga_id"])
    return Order.objects.get(pk=placed["id"]), saga


def test_order_is_on_hold_behind_a_parked_compensation_and_failed_when_resolved(
    catalogue: None, client: Client, settings: Any
) -> None:
    # given: a refund that always fails, so the compensation parks
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 2
    settings.SAGAS_COMPENSATION_BACKOFF = 0.01
    GatewayFault.objects.create(operation="refund", remaining=-1, message="down")

    # when
    order, saga = _place(client, country="AQ")

    # then
    assert saga.status == SagaStatus.FAILED
    assert order.status == OrderStatus.ON_HOLD

    # when: the operator refunds by hand and resolves
    engine.saga_resolve(saga.pk, actor="ann", reason="refunded by phone")

    # then
    order.refresh_from_db()
    assert order.status == OrderStatus.FAILED
    assert "AQ" in order.failure_reason


def test_order_parked_going_forward_is_confirmed_when_resolved(
    catalogue: None,
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: the confirmation step has a bug
    settings.SAGAS_RETRIABLE_MAX_ERRORS = 2

    def broken(**kwargs: Any) -> bool:
        raise RuntimeError("template missing")

    monkeypatch.setattr(order_sagas, "order_send_confirmation", broken)

    # when
    order, saga = _place(client)

    # then: parked after the charge, the order on hold
    assert saga.status == SagaStatus.FAILED
    assert "template missing" in saga.last_error
    assert order.status == OrderStatus.ON_HOLD

    # when
    engine.saga_resolve(saga.pk, actor="ann", reason="emailed by hand")

    # then
    order.refresh_from_db()
    assert order.status == OrderStatus.CONFIRMED


def test_confirmation_is_emailed_once_when_its_step_rolls_back_after_queueing(
    catalogue: None,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    mailoutbox: list[Any],
) -> None:
    # given: confirming the order fails once, after the confirmation step ran,
    # which rolls back the step's transaction
    real_confirm = order_sagas.order_confirm
    failures = iter([RuntimeError("database hiccup")])

    def flaky_confirm(**kwargs: Any) -> None:
        for exc in failures:
            raise exc
        real_confirm(**kwargs)

    monkeypatch.setattr(order_sagas, "order_confirm", flaky_confirm)

    # when
    order, saga = _place(client)

    # then: the step ran twice, the email left once
    assert saga.status == SagaStatus.COMPLETED
    assert order.status == OrderStatus.CONFIRMED
    assert saga.attempts.filter(step="send_confirmation").count() == 2
    assert len(mailoutbox) == 1
    assert order.confirmation_sent_at is not None
