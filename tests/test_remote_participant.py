"""The order saga with a remote participant: the warehouse service, run as its
own Celery app and process with its own database, by command and reply.

Real PostgreSQL, Redis, orchestrator worker and beat, and participant worker.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Sum
from django.test import Client

from orders.models import Order, OrderStatus
from participants.warehouse import store
from payments.models import GatewayLedgerEntry
from sagas.engine import saga_start
from sagas.models import SagaEvent, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from sagas.testing import compensations_run, wait_for_sagas
from tests.helpers import place_order
from tests.processes import Participant

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

STOCK = 100
SKUS = ("WIDGET-1", "GADGET-1", "GIZMO-1")


@pytest.fixture
def warehouse(
    tmp_path: Path,
    process_env: dict[str, str],
    log_dir: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """Set the warehouse's stock and return a starter for its worker processes."""
    settings.ORDERS_FLOW = "remote"
    db = str(tmp_path / "warehouse.sqlite3")
    monkeypatch.setenv("WAREHOUSE_DB", db)
    store.setup(dict.fromkeys(SKUS, STOCK))
    started: list[Participant] = []

    def start(name: str = "warehouse", **env: str) -> Participant:
        process = Participant(name, {**process_env, "WAREHOUSE_DB": db, **env}, log_dir)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


def _assert_books_balance() -> None:
    """Money kept equals confirmed totals; every unit is free or confirmed."""
    captured = GatewayLedgerEntry.objects.aggregate(t=Sum("amount_cents"))["t"] or 0
    confirmed = Order.objects.filter(status=OrderStatus.CONFIRMED)
    assert captured == (confirmed.aggregate(t=Sum("total_cents"))["t"] or 0)
    sold = dict.fromkeys(SKUS, 0)
    for order in confirmed:
        for line in order.lines.all():
            sold[line.sku] += line.quantity
    free = store.free_stock()
    for sku in SKUS:
        assert free[sku] + sold[sku] == STOCK, (sku, free[sku], sold[sku])


ROWS = [
    # (token, country, quantity, order status, saga status)
    ("tok_visa", "DE", 1, OrderStatus.CONFIRMED, SagaStatus.COMPLETED),
    ("tok_visa", "DE", STOCK + 1, OrderStatus.FAILED, SagaStatus.COMPENSATED),
    ("tok_chargeDeclined", "DE", 2, OrderStatus.FAILED, SagaStatus.COMPENSATED),
    ("tok_visa", "AQ", 3, OrderStatus.FAILED, SagaStatus.COMPENSATED),
    ("tok_processingError", "DE", 1, OrderStatus.CONFIRMED, SagaStatus.COMPLETED),
]


def test_failure_table_with_the_warehouse_as_a_remote_participant(
    worker: Any, start_beat: Any, warehouse: Any, catalogue: None, client: Client
) -> None:
    # given
    warehouse()
    start_beat()

    # when
    placed = [
        place_order(client, token=token, country=country, items=[("WIDGET-1", qty)])
        for token, country, qty, _, _ in ROWS
    ]
    sagas = wait_for_sagas([p["saga_id"] for p in placed], timeout=90)

    # then
    for (_, _, _, order_status, saga_status), saga, p in zip(
        ROWS, sagas, placed, strict=True
    ):
        assert saga.definition == "order_checkout_remote"
        assert saga.status == saga_status, (saga.business_key, saga.last_error)
        assert Order.objects.get(pk=p["id"]).status == order_status
    out_of_stock = sagas[1]
    assert out_of_stock.error.startswith("Out of stock")
    releases = StepAttempt.objects.filter(
        saga__in=sagas[2:4], step="reserve_stock", kind="compensation"
    )
    assert {a.status for a in releases} == {AttemptStatus.SUCCEEDED}
    _assert_books_balance()


def test_every_command_and_reply_twice_changes_each_effect_once(
    worker: Any, start_beat: Any, warehouse: Any, catalogue: None, client: Client
) -> None:
    # given: the warehouse answers every command twice and slowly, so the
    # sweeper sends commands again before their reply comes
    warehouse(WAREHOUSE_DUPLICATE_REPLIES="1", WAREHOUSE_LATENCY_MS="700")
    start_beat()

    # when
    placed = [
        place_order(client, token=token, country=country, items=[("GADGET-1", 2)])
        for token, country in [("tok_visa", "DE")] * 4
        + [("tok_chargeDeclined", "DE"), ("tok_visa", "AQ")]
    ]
    sagas = wait_for_sagas([p["saga_id"] for p in placed], timeout=120)

    # then
    assert [s.status for s in sagas] == [SagaStatus.COMPLETED] * 4 + [
        SagaStatus.COMPENSATED
    ] * 2
    _assert_books_balance()
    assert store.free_stock()["GADGET-1"] == STOCK - 4 * 2


def test_kill9_of_participant_and_orchestrator_workers_loses_nothing(
    start_worker: Any, start_beat: Any, warehouse: Any, catalogue: None, client: Client
) -> None:
    # given: 100 orders in flight, short leases so lost work is re-sent soon
    env = {"SAGAS_DISPATCH_LEASE": "2", "CELERY_VISIBILITY_TIMEOUT": "10"}
    start_beat(**env)
    orchestrator = start_worker("orchestrator-0", **env)
    participant = warehouse("warehouse-0", WAREHOUSE_LATENCY_MS="20")
    rng = random.Random(11)
    mix = [("tok_visa", "DE")] * 7 + [("tok_chargeDeclined", "DE"), ("tok_visa", "AQ")]
    placed = [
        place_order(
            client,
            token=token,
            country=country,
            items=[(rng.choice(SKUS), rng.randint(1, 2))],
            customer=f"c{i}",
        )
        for i, (token, country) in enumerate(rng.choice(mix) for _ in range(100))
    ]

    # when: each side's worker is killed (SIGKILL) in turn while sagas run
    for kill in range(6):
        time.sleep(rng.uniform(0.3, 0.8))
        if kill % 2:
            orchestrator.kill9()
            orchestrator = start_worker(f"orchestrator-{kill}", **env)
        else:
            participant.kill9()
            participant = warehouse(f"warehouse-{kill}", WAREHOUSE_LATENCY_MS="20")
    sagas = wait_for_sagas([p["saga_id"] for p in placed], timeout=240)

    # then: all ended as their card and address say; nothing lost or doubled
    assert {s.status for s in sagas} <= {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    for saga in sagas:
        order = Order.objects.get(saga_id=saga.pk)
        expected = (
            OrderStatus.CONFIRMED
            if saga.status == SagaStatus.COMPLETED
            else OrderStatus.FAILED
        )
        assert order.status == expected
    _assert_books_balance()
    assert os.environ.get("WAREHOUSE_DB")


@pytest.mark.parametrize(
    ("definition", "status", "compensated"),
    [
        ("test_silent_remote", SagaStatus.COMPENSATED, ["step_two", "step_one"]),
        ("test_silent_remote_pivot", SagaStatus.FAILED, []),
    ],
)
def test_a_reply_that_never_comes_times_out_by_the_database_clock(
    worker: Any, start_beat: Any, definition: str, status: str, compensated: list[str]
) -> None:
    # given: a remote step whose participant never answers, a 2 s timeout
    start_beat()
    with transaction.atomic():
        saga = saga_start(definition, business_key=f"silent:{uuid.uuid4()}")

    # when
    [saga] = wait_for_sagas([saga.pk], timeout=60)

    # then: the sweeper timed it out; it compensates, or parks as a pivot
    timed_out = StepAttempt.objects.get(saga=saga, step="step_two", kind="action")
    assert timed_out.status == AttemptStatus.TIMED_OUT
    assert saga.status == status
    assert compensations_run(saga.pk) == compensated
    assert SagaEvent.objects.filter(
        saga=saga, actor="sweeper", step="step_two", new_status="timed_out"
    ).exists()
