"""The domain services' precompiled statements, on PostgreSQL and on SQLite."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.forms.models import model_to_dict

from config import sql
from config.routers import SANDBOX_ALIAS
from payments.models import GatewayCharge, Payment, PaymentStatus

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_create_returns_the_row_as_the_orm_reads_it_back(db: Any) -> None:
    saga = uuid.uuid4()

    created = sql.create(
        Payment,
        idempotency_key="k-1",
        saga_id=saga,
        reference="order:1",
        amount_cents=1999,
        status=PaymentStatus.CAPTURED,
        gateway_charge_id="ch_1",
    )

    stored = Payment.objects.get(pk=created.pk)
    assert created.pk is not None
    assert created._state.adding is False
    assert model_to_dict(created) == model_to_dict(stored)
    assert (created.created_at, created.currency) == (stored.created_at, "EUR")
    assert created.saga_id == saga


def test_insert_with_a_unique_field_leaves_a_taken_value_alone(db: Any) -> None:
    def charge(amount_cents: int, status: str) -> tuple[Any, ...] | None:
        return sql.insert(
            GatewayCharge,
            using=SANDBOX_ALIAS,
            unique="key",
            key="same",
            token="tok_visa",
            amount_cents=amount_cents,
            status=status,
            processing_errors=0,
        )

    first = charge(100, "captured")
    second = charge(999, "declined")

    assert first is not None
    assert second is None
    row = GatewayCharge.objects.using(SANDBOX_ALIAS).get(key="same")
    assert (row.pk, row.amount_cents, row.status) == (first[0], 100, "captured")


def test_the_clock_and_the_lock_follow_the_database(db: Any) -> None:
    [(clock,)] = sql.fetch(f"SELECT {sql.now()}", [])

    assert clock is not None
    if connection.vendor == "postgresql":
        assert sql.lock() == " FOR UPDATE"
        assert sql.lock(of="orders_order") == ' FOR UPDATE OF "orders_order"'
    else:
        assert sql.lock() == sql.lock(of="orders_order") == ""
