"""The embedded default with real processes: SQLite files and the filesystem broker.

Run by ``make test`` in a second pytest session without ``DATABASE_URL`` and
``CELERY_BROKER_URL`` (see the Makefile). The soak runs a short version by
default; ``SAGAS_SOAK=1`` runs the full one (2,000 sagas, two worker
processes, a CPU burner on every core).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import Client
from django_celery_beat.models import PeriodicTask

from orders.demo import SCENARIOS
from sagas.checks import sweeper_heartbeat_check
from sagas.engine import saga_start
from sagas.models import Saga, SagaEvent, StepAttempt, SweeperHeartbeat
from sagas.processes import Worker
from sagas.schedule import SWEEP_TASK_NAME
from sagas.states import AttemptStatus, SagaStatus
from sagas.testing import compensations_run, steps_run, wait_for_sagas
from tests.admin_support import CHANGELIST

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.embedded,
]

TERMINAL = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}


@pytest.fixture(autouse=True)
def _on_the_embedded_default() -> None:
    if connections["default"].vendor != "sqlite" or not str(
        settings.CELERY_BROKER_URL
    ).startswith("filesystem"):
        pytest.fail(
            "the embedded suite runs on SQLite and the filesystem broker: "
            "`make test` runs it without DATABASE_URL and CELERY_BROKER_URL",
            pytrace=False,
        )
    assert settings.CELERY_BROKER_TRANSPORT == "sagas.transport:Transport"


def _record(artifacts_dir: Path, name: str, figures: dict[str, Any]) -> None:
    path = artifacts_dir / "embedded.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


def _crashes(*workers: Worker) -> int:
    """Count workers that died, or logged an unrecoverable error, by themselves."""
    died = sum(not worker.alive for worker in workers)
    unrecoverable = sum(
        worker.log_text().count("Unrecoverable error") for worker in workers
    )
    return died + unrecoverable


@pytest.fixture
def publisher_transport() -> Any:
    """Let the test process publish through a given transport, then restore it."""
    from config.celery import app as celery_app

    app: Any = celery_app
    original = app.conf.broker_transport

    def use(transport: str) -> Any:
        app.conf.broker_transport = transport
        # Pools built for the previous transport would keep using it.
        app._pool = None
        app.amqp._producer_pool = None
        return app

    yield use
    use(original)


@pytest.mark.parametrize(
    ("transport", "tears"),
    [("filesystem", True), ("sagas.transport:Transport", False)],
    ids=["stock", "atomic"],
)
def test_worker_under_concurrent_senders_crashes_only_on_the_stock_transport(
    transport: str,
    tears: bool,
    start_worker: Any,
    publisher_transport: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a worker, and senders that pause between creating a message file
    # and writing it, as a busy machine deschedules them now and then
    from kombu.transport import filesystem

    real_lock = filesystem.lock

    def lock(f: Any, flags: int) -> None:
        if flags == filesystem.LOCK_EX:  # type: ignore[attr-defined]
            time.sleep(0.01)
        real_lock(f, flags)

    monkeypatch.setattr(filesystem, "lock", lock)
    worker = start_worker(f"torn-{tears}", CELERY_BROKER_TRANSPORT=transport)
    app = publisher_transport(transport)
    senders, per_sender = 4, 40
    # Tasks left in the session's broker by an earlier case are not counted.
    run = uuid.uuid4().hex

    # when four threads send a no-op task 40 times each, spaced out so the
    # worker keeps up and polls while the newest file is still empty (with a
    # backlog it takes the oldest, complete files first)
    def send(sender: int) -> None:
        for n in range(per_sender):
            app.send_task("celery.accumulate", args=[run, sender, n])
            time.sleep(0.03)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def succeeded() -> int:
        return sum(
            "succeeded in" in line and run in line
            for line in worker.log_text().splitlines()
        )

    deadline = time.monotonic() + 30
    while (
        worker.alive
        and succeeded() < senders * per_sender
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)

    # then the stock transport's worker read an empty file and died; the
    # atomic one ran every task and lives
    if tears:
        assert "Unrecoverable error" in worker.log_text()
        assert "JSONDecodeError" in worker.log_text()
    else:
        assert worker.alive
        assert "Unrecoverable error" not in worker.log_text()
        assert succeeded() == senders * per_sender


def test_failure_table_on_the_embedded_default(
    start_worker: Any, start_beat: Any, catalogue: None, client: Client
) -> None:
    # given a worker and beat on SQLite and the atomic filesystem broker
    worker = start_worker("embedded-table")
    start_beat("embedded-table-beat", install=False)

    # when one order per row of the failure table is placed
    placed = []
    for scenario in SCENARIOS:
        response = client.post(
            "/api/orders/", json.dumps(scenario.body), content_type="application/json"
        )
        assert response.status_code == 202, response.content
        placed.append(response.json())
    wait_for_sagas([p["saga_id"] for p in placed], timeout=90)

    # then every row ends as the table says
    for scenario, order in zip(SCENARIOS, placed, strict=True):
        detail = client.get(f"/api/orders/{order['id']}/").json()
        assert (detail["status"], detail["saga_status"]) == (
            scenario.order_status,
            scenario.saga_status,
        ), scenario.label
        assert tuple(steps_run(order["saga_id"])) == scenario.steps_run, scenario.label
        assert tuple(compensations_run(order["saga_id"])) == scenario.compensated, (
            scenario.label
        )
    assert _crashes(worker) == 0


def test_worker_killed_mid_step_without_install_sweepers_every_saga_ends(
    start_worker: Any,
    start_beat: Any,
    admin_client: Client,
    artifacts_dir: Path,
) -> None:
    # given no sweep schedule at all (install_sweepers never ran, row deleted)
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).delete()
    env = {"SAGAS_DISPATCH_LEASE": "3", "SAGAS_SWEEP_INTERVAL": "1"}
    victim = start_worker("embedded-victim", **env)
    with transaction.atomic():
        ids = [
            saga_start(
                "test_four_steps",
                business_key=f"kill:{n}",
                context={"sleep": {"step_two": 0.4}},
            ).pk
            for n in range(12)
        ]

    # when the worker is killed (kill -9, whole group) while it runs steps
    deadline = time.monotonic() + 30
    while not StepAttempt.objects.filter(
        step="step_two", status=AttemptStatus.DISPATCHED
    ).exists():
        assert time.monotonic() < deadline, "no step_two was ever dispatched"
        time.sleep(0.02)
    time.sleep(0.6)
    victim.kill9()
    start_worker("embedded-survivor", **env)
    # ...the survivor drains what the broker still holds; the killed
    # worker's messages are gone, and nothing sweeps.
    time.sleep(4)

    # then the sagas it held stay active, and both the check and the banner say why
    stranded = Saga.objects.exclude(status__in=TERMINAL).count()
    assert stranded > 0
    [warning] = sweeper_heartbeat_check()
    assert warning.id == "sagas.W002"
    assert "data-sweeper-alert" in admin_client.get(CHANGELIST).content.decode()

    # when beat starts (it installs the schedule itself)
    began = time.monotonic()
    start_beat("embedded-beat", install=False, **env)
    sagas = wait_for_sagas(ids, timeout=120)

    # then every saga ended, and the alarm is off
    assert {s.status for s in sagas} == {SagaStatus.COMPLETED}
    assert PeriodicTask.objects.filter(name=SWEEP_TASK_NAME, enabled=True).exists()
    assert SweeperHeartbeat.objects.exists()
    assert sweeper_heartbeat_check() == []
    _record(
        artifacts_dir,
        "kill9_without_install_sweepers",
        {
            "sagas": len(ids),
            "active_before_beat": stranded,
            # Steps whose message died with the killed worker.
            "re_sent_by_sweeper": SagaEvent.objects.filter(
                detail__startswith="re-sent"
            ).count(),
            "seconds_from_beat_to_all_terminal": round(time.monotonic() - began, 1),
        },
    )


def _burn_cpu(seconds: float) -> list[subprocess.Popen[bytes]]:
    """Keep every core busy, as the other processes of a busy machine do."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    cores = os.cpu_count() or 2
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(cores)]


def test_soak_on_the_embedded_default_loses_nothing_under_load(
    start_worker: Any, start_beat: Any, artifacts_dir: Path
) -> None:
    # given two worker processes, beat, and a CPU burner on every core; a lease
    # long enough that the sweeper never re-sends: every saga must end on the
    # messages the broker delivered
    full = os.environ.get("SAGAS_SOAK") == "1"
    count = 2000 if full else 150
    env = {"SAGAS_DISPATCH_LEASE": "3600"}
    workers = [start_worker(f"soak-{n}", concurrency=1, **env) for n in range(2)]
    start_beat("soak-beat", install=False, **env)
    burners = _burn_cpu(3600)
    rng = random.Random(11)
    began = time.monotonic()
    try:
        # when sagas are started one transaction at a time (each publishes
        # after its commit) while the workers publish the next steps
        ids = []
        for n in range(count):
            failing = rng.choice([None, None, None, "step_two", "step_three"])
            context = {"fail": {failing: "permanent"}} if failing else {}
            with transaction.atomic():
                ids.append(
                    saga_start(
                        "test_four_steps", business_key=f"soak:{n}", context=context
                    ).pk
                )
        sagas = wait_for_sagas(ids, timeout=1500 if full else 240)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    elapsed = time.monotonic() - began

    # then no worker crashed, no message was lost, every saga is terminal
    crashes = _crashes(*workers)
    resent = SagaEvent.objects.filter(detail__startswith="re-sent").count()
    statuses = [s.status for s in sagas]
    figures = {
        "sagas": count,
        "seconds": round(elapsed, 1),
        "sagas_per_second": round(count / elapsed, 1),
        "worker_processes": len(workers),
        "cpu_burners": len(burners),
        "crashes": crashes,
        "lost": resent,
        "completed": statuses.count(SagaStatus.COMPLETED),
        "compensated": statuses.count(SagaStatus.COMPENSATED),
    }
    _record(artifacts_dir, "soak_full" if full else "soak_short", figures)
    assert set(statuses) <= TERMINAL
    assert crashes == 0
    assert resent == 0
