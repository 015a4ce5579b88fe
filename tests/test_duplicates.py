"""At-least-once delivery: every message twice, and stale copies afterwards."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from django.db import transaction
from django.test import Client

from inventory.models import Reservation
from orders.models import Order
from payments.models import GatewayCharge, GatewayLedgerEntry, Payment
from sagas.engine import saga_start
from sagas.models import StepAttempt
from sagas.states import SagaStatus
from sagas.tasks import step_execute_task
from sagas.testing import wait_for_sagas
from shipping.models import CarrierBooking, Shipment
from tests.helpers import assert_ledgers_balance, place_order
from tests.sagatest.models import Effect

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def _fenced_count(worker: Any) -> int:
    return worker.log_path.read_text().count("'fenced'")


def _wait_queue_drained(broker_url: str, worker: Any, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _fenced_count(worker) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"only {_fenced_count(worker)} fenced deliveries, wanted {at_least}"
    )


@pytest.mark.parametrize("inline_steps", ["0", "16"])
def test_every_message_delivered_twice_leaves_each_effect_once(
    start_worker: Any,
    catalogue: None,
    client: Client,
    process_env: dict[str, str],
    inline_steps: str,
) -> None:
    # given: a worker whose every step message is published twice; with
    # inline continuation (16) most steps need no message, so the first ones,
    # published by this process, are published twice here too
    worker = start_worker(
        f"dupes-{inline_steps}",
        concurrency=2,
        SAGAS_TEST_DUPLICATE_MESSAGES="1",
        SAGAS_INLINE_STEPS=inline_steps,
    )

    # when
    orders = [
        place_order(client),
        place_order(client, token="tok_chargeDeclined"),
        place_order(client, country="AQ"),
        place_order(client, token="tok_processingError"),
    ]
    with transaction.atomic():
        tests = [
            saga_start(
                "test_four_steps", business_key=f"t:{uuid.uuid4()}", context=ctx
            ).pk
            for ctx in ({}, {"fail": {"step_four": "permanent"}})
        ]
    saga_ids = [o["saga_id"] for o in orders] + tests
    first_copies = 0
    if inline_steps != "0":
        for saga_id in saga_ids:
            first = StepAttempt.objects.filter(saga_id=saga_id).order_by("id").first()
            assert first is not None
            step_execute_task.apply_async(args=(str(saga_id), first.pk))
            first_copies += 1
    sagas = wait_for_sagas(saga_ids, timeout=60)

    # then
    assert [s.status for s in sagas] == [
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPLETED,
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
    ]
    attempts = StepAttempt.objects.filter(saga__in=sagas).count()
    # One copy of each message was fenced: one per attempt without inline
    # continuation; with it, at least the duplicated first messages.
    expected = attempts // 2 if inline_steps == "0" else first_copies
    _wait_queue_drained(process_env["CELERY_BROKER_URL"], worker, at_least=expected)
    _assert_each_effect_once(tests)


def test_stale_copies_after_the_saga_finished_change_nothing(
    worker: Any, catalogue: None, client: Client, process_env: dict[str, str]
) -> None:
    # given: finished sagas
    orders = [place_order(client), place_order(client, country="AQ")]
    with transaction.atomic():
        tests = [
            saga_start(
                "test_four_steps", business_key=f"t:{uuid.uuid4()}", context=ctx
            ).pk
            for ctx in ({}, {"fail": {"step_three": "permanent"}})
        ]
    sagas = wait_for_sagas([o["saga_id"] for o in orders] + tests, timeout=60)
    before = _snapshot()
    fenced_before = _fenced_count(worker)

    # when: every message is delivered again, late
    attempts = list(
        StepAttempt.objects.filter(saga__in=sagas).values_list("saga_id", "id")
    )
    for saga_id, attempt_id in attempts:
        step_execute_task.apply_async(args=(str(saga_id), attempt_id))
    _wait_queue_drained(
        process_env["CELERY_BROKER_URL"], worker, at_least=fenced_before + len(attempts)
    )

    # then
    assert _snapshot() == before
    _assert_each_effect_once(tests)
    assert redis.Redis.from_url(process_env["CELERY_BROKER_URL"]).llen("celery") == 0


def _snapshot() -> dict[str, Any]:
    return {
        "orders": sorted(Order.objects.values_list("id", "status")),
        "attempts": StepAttempt.objects.count(),
        "ledger": sorted(
            GatewayLedgerEntry.objects.values_list("charge_id", "amount_cents")
        ),
        "reservations": sorted(Reservation.objects.values_list("id", "status")),
        "shipments": sorted(Shipment.objects.values_list("id", "status")),
        "effects": Effect.objects.count(),
    }


def _assert_each_effect_once(test_sagas: list[Any]) -> None:
    # one gateway capture per payment, one booking per shipment, one reservation per SKU
    charges = GatewayCharge.objects.count()
    assert (
        GatewayLedgerEntry.objects.filter(amount_cents__gt=0).count()
        == Payment.objects.count()
    )
    assert GatewayLedgerEntry.objects.filter(amount_cents__lt=0).count() <= charges
    assert (
        CarrierBooking.objects.filter(status="booked").count()
        == Shipment.objects.filter(status="created").count()
    )
    per_saga = Reservation.objects.values_list("saga_id", "product_id")
    assert len(per_saga) == len(set(per_saga))
    for saga_id in test_sagas:
        rows = list(Effect.objects.filter(saga_id=saga_id).values_list("step", "kind"))
        assert len(rows) == len(set(rows)), f"duplicate effects for {saga_id}: {rows}"
    assert_ledgers_balance(initial_stock=100)
