"""Crash recovery with real processes: kill -9, lost messages, broker restarts,
timeouts, failing compensations, poison messages, two beats.

The broker faults run on Redis and on RabbitMQ (``broker`` parameter).

Figures for each run are written to ``test-artifacts/chaos.json``.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import transaction
from django.db.models import Count
from django.db.models.functions import Now
from django.test import Client

from orders.models import Order, OrderStatus
from payments.models import GatewayFault, GatewayLedgerEntry, Payment
from sagas import engine
from sagas.engine import saga_start
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.states import AttemptKind, AttemptStatus, SagaStatus
from sagas.testing import compensations_run, wait_for_sagas
from tests.brokers import BROKERS, Broker
from tests.helpers import assert_ledgers_balance, place_order
from tests.sagatest.models import Effect

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

# Short leases and visibility so recovery happens within a test's patience.
CHAOS_ENV = {
    "SAGAS_DISPATCH_LEASE": "2",
    "CELERY_VISIBILITY_TIMEOUT": "10",
    "SAGAS_COMPENSATION_MAX_BACKOFF": "1",
    "SANDBOX_LATENCY_MS": "30",
}
SKUS = ("WIDGET-1", "GADGET-1", "GIZMO-1")
# Every kind of step of the order saga that a mixed batch runs: actions and the
# compensations of declined and undeliverable orders.
KILL_TARGETS = (
    ("charge_payment", AttemptKind.ACTION),
    ("reserve_stock", AttemptKind.COMPENSATION),
    ("create_shipment", AttemptKind.ACTION),
    ("charge_payment", AttemptKind.COMPENSATION),
    ("reserve_stock", AttemptKind.ACTION),
    ("send_confirmation", AttemptKind.ACTION),
)


def _record(artifacts_dir: Path, name: str, figures: dict[str, Any]) -> None:
    path = artifacts_dir / "chaos.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


def _place_mix(client: Client, count: int) -> list[dict[str, Any]]:
    """Place orders walking the failure table: happy, declined, AQ, flaky card."""
    kinds = [
        {},
        {"token": "tok_chargeDeclined"},
        {"country": "AQ"},
        {"token": "tok_processingError"},
        {},
    ]
    return [
        place_order(client, items=[(SKUS[n % 3], 1)], **kinds[n % len(kinds)])
        for n in range(count)
    ]


def _assert_no_duplicate_effects() -> dict[str, int]:
    captures = (
        GatewayLedgerEntry.objects.filter(amount_cents__gt=0)
        .values("charge_id")
        .annotate(n=Count("id"))
    )
    refunds = (
        GatewayLedgerEntry.objects.filter(amount_cents__lt=0)
        .values("charge_id")
        .annotate(n=Count("id"))
    )
    double_captures = [row for row in captures if row["n"] > 1]
    double_refunds = [row for row in refunds if row["n"] > 1]
    assert not double_captures, f"captured twice: {double_captures}"
    assert not double_refunds, f"refunded twice: {double_refunds}"
    assert Payment.objects.count() == len(captures)
    assert_ledgers_balance(initial_stock=100)
    return {"duplicated_effects": len(double_captures) + len(double_refunds)}


def _assert_orders_match_sagas(placed: list[dict[str, Any]]) -> None:
    sagas = {str(s.pk): s.status for s in Saga.objects.all()}
    for order in Order.objects.filter(pk__in=[p["id"] for p in placed]):
        expected: dict[str, str] = {
            SagaStatus.COMPLETED: OrderStatus.CONFIRMED,
            SagaStatus.COMPENSATED: OrderStatus.FAILED,
        }
        assert order.status == expected[sagas[str(order.saga_id)]], order.pk


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_kill9_of_the_worker_during_steps_loses_and_duplicates_nothing(
    broker: Broker,
    start_worker: Any,
    start_beat: Any,
    catalogue: None,
    client: Client,
    artifacts_dir: Path,
) -> None:
    # given: beat sweeping every second, a worker, and 120 orders in flight
    start_beat(**CHAOS_ENV)
    worker = start_worker("victim-0", **CHAOS_ENV)
    began = time.monotonic()
    placed = _place_mix(client, 120)
    saga_ids = [p["saga_id"] for p in placed]
    rng = random.Random(7)
    in_flight: set[tuple[str, str]] = set()
    kills = 0

    # when: the worker is killed (whole process group, SIGKILL) again and again,
    # each kill aimed at a moment when a given kind of step is in flight
    while (
        kills < 15
        and Saga.objects.filter(
            status__in=[SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING]
        ).exists()
    ):
        target = KILL_TARGETS[kills % len(KILL_TARGETS)]
        time.sleep(rng.uniform(0.1, 0.5))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            dispatched = set(
                StepAttempt.objects.filter(status=AttemptStatus.DISPATCHED).values_list(
                    "step", "kind"
                )
            )
            if target in dispatched:
                break
            time.sleep(0.02)
        in_flight |= dispatched
        worker.kill9()
        kills += 1
        worker = start_worker(f"victim-{kills}", **CHAOS_ENV)
    sagas = wait_for_sagas(saga_ids, timeout=240)
    elapsed = time.monotonic() - began

    # then: every saga ended, nothing lost, no effect twice, ledgers balance
    assert kills >= 5
    assert {s.status for s in sagas} <= {
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
    }, [(s.business_key, s.last_error) for s in sagas if s.status == SagaStatus.FAILED]
    _assert_orders_match_sagas(placed)
    figures = _assert_no_duplicate_effects()
    # The kills landed while steps of every kind were in flight.
    assert set(KILL_TARGETS) <= in_flight, in_flight
    resent = SagaEvent.objects.filter(detail__startswith="re-sent").count()
    _record(
        artifacts_dir,
        f"kill9_worker_{broker.name}",
        {
            "sagas": len(sagas),
            "faults_injected": kills,
            "lost": 0,
            "re_sent_by_sweeper": resent,
            "in_flight_step_kinds_at_kills": len(in_flight),
            "seconds_until_all_terminal": round(elapsed, 1),
            **figures,
        },
    )


@pytest.mark.parametrize("fault", ["restart", "messages_lost"])
@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_broker_restarted_or_messages_lost_mid_run_every_saga_still_ends(
    broker: Broker,
    fault: str,
    start_worker: Any,
    start_beat: Any,
    catalogue: None,
    client: Client,
    artifacts_dir: Path,
) -> None:
    # given
    start_beat(**CHAOS_ENV)
    start_worker(f"{broker.name}-chaos", **CHAOS_ENV)
    began = time.monotonic()
    placed = _place_mix(client, 60)
    time.sleep(0.5)

    # when
    if fault == "restart":
        broker.restart()
    else:
        broker.drop_messages()
    sagas = wait_for_sagas([p["saga_id"] for p in placed], timeout=180)

    # then
    assert {s.status for s in sagas} <= {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    _assert_orders_match_sagas(placed)
    figures = _assert_no_duplicate_effects()
    _record(
        artifacts_dir,
        f"{broker.name}_{fault}",
        {
            "sagas": len(sagas),
            "faults_injected": 1,
            "lost": 0,
            "seconds_until_all_terminal": round(time.monotonic() - began, 1),
            **figures,
        },
    )


def _start_test_saga(name: str = "test_four_steps", **context: Any) -> Saga:
    with transaction.atomic():
        return saga_start(name, business_key=f"t:{uuid.uuid4()}", context=context)


def test_step_sleeping_past_its_timeout_is_compensated_including_itself(
    start_worker: Any,
) -> None:
    # given: a worker; step_two sleeps 4 s against a 1.5 s timeout, twice
    start_worker("sleepy", **CHAOS_ENV)

    # when
    saga = _start_test_saga("test_timeouts", sleep={"step_two": 4})
    [saga] = wait_for_sagas([saga.pk], timeout=60)

    # then
    attempts = StepAttempt.objects.filter(saga=saga, step="step_two", kind="action")
    assert [a.status for a in attempts.order_by("number")] == [
        AttemptStatus.TIMED_OUT,
        AttemptStatus.TIMED_OUT,
    ]
    assert saga.status == SagaStatus.COMPENSATED
    assert compensations_run(saga.pk) == ["step_two", "step_one"]
    # What the timed-out step wrote rolled back with it.
    assert not Effect.objects.filter(saga_id=saga.pk, step="step_two", kind="action")


def test_sweeper_times_out_a_step_whose_message_was_lost(
    start_worker: Any, start_beat: Any
) -> None:
    # given: a saga whose first message is lost before any worker saw it
    saga = _start_test_saga("test_timeouts")
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushall()
    time.sleep(2)

    # when: beat and a worker come up, with a lease longer than the deadline
    start_beat(SAGAS_DISPATCH_LEASE="60")
    start_worker("late", SAGAS_DISPATCH_LEASE="60")
    [saga] = wait_for_sagas([saga.pk], timeout=60)

    # then: the database deadline failed attempt 1 and attempt 2 ran
    assert saga.status == SagaStatus.COMPLETED
    first, second = StepAttempt.objects.filter(saga=saga, step="step_one").order_by(
        "number"
    )
    assert first.status == AttemptStatus.TIMED_OUT
    assert second.status == AttemptStatus.SUCCEEDED
    assert SagaEvent.objects.filter(
        saga=saga, actor="sweeper", step="step_one", new_status=AttemptStatus.TIMED_OUT
    ).exists()


def test_refund_failing_five_times_then_succeeding_refunds_once(
    start_worker: Any, start_beat: Any, catalogue: None, client: Client
) -> None:
    # given
    GatewayFault.objects.create(operation="refund", remaining=5)
    start_beat(**CHAOS_ENV)
    start_worker("refunds", **CHAOS_ENV)

    # when
    placed = place_order(client, country="AQ")
    [saga] = wait_for_sagas([placed["saga_id"]], timeout=90)

    # then
    assert saga.status == SagaStatus.COMPENSATED
    refunds = StepAttempt.objects.filter(
        saga=saga, step="charge_payment", kind=AttemptKind.COMPENSATION
    ).order_by("number")
    assert [a.status for a in refunds] == [AttemptStatus.FAILED] * 5 + [
        AttemptStatus.SUCCEEDED
    ]
    assert GatewayLedgerEntry.objects.filter(amount_cents__lt=0).count() == 1
    assert Order.objects.get(pk=placed["id"]).status == OrderStatus.FAILED
    assert_ledgers_balance(initial_stock=100)


def test_refund_that_always_fails_parks_the_saga_until_an_operator_retries(
    start_worker: Any, start_beat: Any, catalogue: None, client: Client
) -> None:
    # given: a refund that fails every time, and a low compensation limit
    GatewayFault.objects.create(
        operation="refund", remaining=-1, message="gateway down"
    )
    env = {**CHAOS_ENV, "SAGAS_COMPENSATION_MAX_ATTEMPTS": "4"}
    start_beat(**env)
    worker = start_worker("stuck-refunds", **env)

    # when
    placed = place_order(client, country="AQ")
    [saga] = wait_for_sagas([placed["saga_id"]], timeout=90)

    # then: parked for an operator, with the error and an ERROR log line
    assert saga.status == SagaStatus.FAILED
    assert "gateway down" in saga.last_error
    assert saga.error == "Cannot ship: the carrier does not deliver to AQ"
    # The order never says "pending" behind a parked saga.
    assert Order.objects.get(pk=placed["id"]).status == OrderStatus.ON_HOLD
    error_lines = [
        json.loads(line)
        for line in worker.log_path.read_text().splitlines()
        if line.startswith("{") and '"saga.needs_operator"' in line
    ]
    assert any(
        line["level"] == "error" and line["saga_id"] == str(saga.pk)
        for line in error_lines
    )

    # when: the fault is cleared and an operator retries
    GatewayFault.objects.all().delete()
    engine.saga_retry(saga.pk, actor="alice", reason="gateway is back")
    [saga] = wait_for_sagas([saga.pk], timeout=60)

    # then
    assert saga.status == SagaStatus.COMPENSATED
    assert GatewayLedgerEntry.objects.filter(amount_cents__lt=0).count() == 1
    assert Order.objects.get(pk=placed["id"]).status == OrderStatus.FAILED
    assert SagaEvent.objects.filter(saga=saga, actor="operator:alice").exists()
    assert_ledgers_balance(initial_stock=100)


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_poison_message_is_parked_after_bounded_deliveries(
    broker: Broker, start_worker: Any
) -> None:
    # given: step_two kills its worker process every time it runs
    start_worker("poisoned", SAGAS_MAX_DELIVERIES="3", **CHAOS_ENV)

    # when
    saga = _start_test_saga(crash={"step_two": True})
    [saga] = wait_for_sagas([saga.pk], timeout=90)

    # then: it stopped looping, and step_two (which may have half run) is undone
    attempt = StepAttempt.objects.get(saga=saga, step="step_two", kind="action")
    assert attempt.status == AttemptStatus.FAILED
    assert "crashed its worker" in attempt.error
    assert attempt.deliveries == 4
    assert saga.status == SagaStatus.COMPENSATED
    assert compensations_run(saga.pk) == ["step_two", "step_one"]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_two_beats_recover_hundreds_of_stuck_sagas_once_each(
    broker: Broker, start_worker: Any, start_beat: Any, artifacts_dir: Path
) -> None:
    # given: 300 sagas whose first messages were lost, now due for the sweeper
    with transaction.atomic():
        sagas = [
            saga_start("test_four_steps", business_key=f"stuck:{n}") for n in range(300)
        ]
    broker.drop_messages()
    Saga.objects.update(wake_at=Now())
    began = time.monotonic()

    # when: two beat schedulers sweep at once
    start_beat("beat-a", every=1)
    start_beat("beat-b", every=1)
    start_worker("sweepers")
    done = wait_for_sagas([s.pk for s in sagas], timeout=180)

    # then: every saga completed, each re-sent exactly once
    assert {s.status for s in done} == {SagaStatus.COMPLETED}
    resent = dict(
        SagaEvent.objects.filter(detail__startswith="re-sent")
        .values_list("saga_id")
        .annotate(n=Count("id"))
    )
    assert len(resent) == 300
    assert set(resent.values()) == {1}
    assert (
        StepAttempt.objects.filter(saga__in=sagas, step="step_one")
        .values("saga")
        .count()
        == 300
    )
    _record(
        artifacts_dir,
        f"two_beats_{broker.name}",
        {
            "sagas": 300,
            "faults_injected": 300,
            "lost": 0,
            "recovered_twice": sum(1 for n in resent.values() if n > 1),
            "seconds_until_all_terminal": round(time.monotonic() - began, 1),
        },
    )


@pytest.mark.parametrize("skew", ["-1h", "+1h"])
def test_worker_clock_skew_never_times_a_step_out_early(
    skew: str, start_worker: Any, start_beat: Any
) -> None:
    # given: the only worker's clock is an hour off; beat sweeps every second
    start_beat()
    start_worker(f"skewed{skew}", wrapper=("faketime", "-f", skew))

    # when: steps take a third of their 1.5 s deadline (one saga at a time, so
    # that no step waits in the queue: the deadline counts from dispatch)
    done = []
    for _ in range(3):
        saga = _start_test_saga("test_timeouts", sleep={"step_one": 0.5})
        done += wait_for_sagas([saga.pk], timeout=30)

    # then: deadlines come from the database clock, so none expired early
    assert {s.status for s in done} == {SagaStatus.COMPLETED}
    assert not StepAttempt.objects.exclude(status=AttemptStatus.SUCCEEDED).exists()
