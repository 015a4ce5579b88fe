"""Prometheus metrics from real processes: gunicorn and a prefork worker, each in
prometheus-client's multiprocess mode, scraped over HTTP after the failure table."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sagas.testing import wait_for_sagas
from tests.helpers import order_body
from tests.observability import Gunicorn, Labels, by, free_port, request, scrape
from tests.processes import ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

ORDER = "order_checkout"


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Retry ``check`` until it stops raising AssertionError (signals run after
    the commit that a test sees in the database)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def web(
    process_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> Iterator[Gunicorn]:
    metrics_dir = tmp_path / "web-metrics"
    metrics_dir.mkdir()
    env = {**process_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = Gunicorn("metrics-web", env, log_dir, free_port()).start()
    yield process
    process.stop()


def _metrics_worker(start_worker: Any, tmp_path: Path, **env: str) -> str:
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    port = free_port()
    start_worker(
        "metrics-worker",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        SAGAS_WORKER_METRICS_PORT=str(port),
        SAGAS_WORKER_METRICS_ADDR="127.0.0.1",
        **env,
    )
    return f"http://127.0.0.1:{port}/metrics"


def test_failure_table_counts_every_outcome_on_metrics_endpoints(
    start_worker: Any, web: Gunicorn, catalogue: None, tmp_path: Path
) -> None:
    # given: a web process and a worker, both exposing /metrics
    worker_metrics = _metrics_worker(start_worker, tmp_path)
    rows = [
        order_body(),
        order_body(items=[("GADGET-1", 101)]),
        order_body(token="tok_chargeDeclined"),
        order_body(country="AQ"),
        order_body(token="tok_processingError"),
    ]

    # when: each row of the failure table is ordered over HTTP and finishes
    placed = []
    for body in rows:
        status, order = request(f"{web.base}/api/orders/", body)
        assert status == 202, order
        placed.append(order)
    wait_for_sagas([p["saga_id"] for p in placed], timeout=60)

    # then: web and worker together count each saga, attempt and retry once
    def counted() -> dict[str, Any]:
        samples = scrape(f"{web.base}/metrics", worker_metrics)
        found: dict[str, Any] = {
            "started": by(samples, "sagas_started_total", "definition"),
            "finished": by(samples, "sagas_finished_total", "status", definition=ORDER),
            "compensations": by(samples, "sagas_compensations_total", "definition"),
            "parked": by(samples, "sagas_parked_total", "definition"),
            "retries": by(samples, "sagas_step_retries_total", "step", "kind"),
            "attempts": by(
                samples, "sagas_step_attempts_total", "step", "kind", "outcome",
                definition=ORDER,
            ),
            "timed": by(
                samples, "sagas_step_duration_seconds_count", "step", "kind",
                "outcome", definition=ORDER,
            ),
            "lag": sum(
                by(samples, "sagas_step_dispatch_lag_seconds_count", "step", "kind")
                .values()
            ),
            "saga_durations": by(
                samples, "sagas_saga_duration_seconds_count", "status"
            ),
        }  # fmt: skip
        assert found["finished"] == {("completed",): 2, ("compensated",): 3}
        assert found["saga_durations"] == found["finished"]
        assert found["lag"] == sum(found["attempts"].values())
        return found

    found = eventually(counted)
    assert found["started"] == {(ORDER,): 5}
    assert found["compensations"] == {(ORDER,): 3}
    assert found["parked"] == {}
    # The transient processing error: one retry, two charge attempts.
    assert found["retries"] == {("charge_payment", "action"): 1}
    assert found["attempts"] == {
        ("reserve_stock", "action", "succeeded"): 4,
        ("reserve_stock", "action", "failed"): 1,
        ("charge_payment", "action", "succeeded"): 3,
        ("charge_payment", "action", "failed"): 2,
        ("create_shipment", "action", "succeeded"): 2,
        ("create_shipment", "action", "failed"): 1,
        ("send_confirmation", "action", "succeeded"): 2,
        # Declined card: release; undeliverable: refund, then release.
        ("reserve_stock", "compensation", "succeeded"): 2,
        ("charge_payment", "compensation", "succeeded"): 1,
    }
    # Every attempt that ran in the worker was timed, with its outcome.
    assert found["timed"] == found["attempts"]


def test_sweeper_reports_stuck_sagas_and_its_last_run(
    start_worker: Any, start_beat: Any, catalogue: None, tmp_path: Path
) -> None:
    from sagas.engine import saga_start

    # given: "stuck" after one second, a sweeper every second, a slow step
    worker_metrics = _metrics_worker(start_worker, tmp_path, SAGAS_STUCK_AFTER="1")
    start_beat(every=1.0)
    saga = saga_start(
        "test_four_steps",
        business_key="metrics:stuck",
        context={"sleep": {"step_one": 6}},
    )
    before = time.time()

    # when: the step runs past the stuck threshold
    def stuck() -> dict[str, Any]:
        samples = scrape(worker_metrics)
        found = by(samples, "sagas_stuck", "definition")
        assert found == {("test_four_steps",): 1}
        return samples

    samples = eventually(stuck, timeout=20)

    # then: the gauges read from the database show it; the sweeper ran just now
    # (still "pending": its first step's transaction has not committed yet)
    assert by(samples, "sagas_active", "definition", "status") == {
        ("test_four_steps", "pending"): 1
    }
    assert (
        by(samples, "sagas_oldest_active_age_seconds", "definition")[
            ("test_four_steps",)
        ]
        >= 1
    )
    (last_run,) = by(samples, "sagas_sweeper_last_run_timestamp_seconds").values()
    assert last_run >= before
    assert samples["sagas_sweeper_pass_duration_seconds_count"][()] >= 1

    # and: fed to promtool as they were scraped, those series fire SagasStuck
    _assert_rules_fire_on(samples, tmp_path)

    # and when the saga finishes, the next sweep clears the gauge
    wait_for_sagas([saga.pk], timeout=30)

    def cleared() -> None:
        assert by(scrape(worker_metrics), "sagas_stuck", "definition") == {}

    eventually(cleared)


GAUGES = (
    "sagas_stuck",
    "sagas_parked_now",
    "sagas_active",
    "sagas_oldest_active_age_seconds",
    "sagas_sweeper_last_run_timestamp_seconds",
)
STUCK_DESCRIPTION = (
    "Active sagas made no progress for SAGAS_STUCK_AFTER seconds. Open the admin's"
    ' saga list with the "stuck" filter, then resume or compensate.'
)


def _assert_rules_fire_on(samples: dict[str, dict[Labels, float]], tmp: Path) -> None:
    """Run the shipped rules over the scraped gauges held for 20 minutes."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test-tools` installs it"
    series = [
        {
            "series": name
            + "{"
            + ", ".join(f'{k}="{v}"' for k, v in (*labels, ("instance", "worker")))
            + "}",
            "values": f"{value}x20",
        }
        for name in GAUGES
        for labels, value in samples[name].items()
    ]
    stuck = by(samples, "sagas_stuck", "definition")
    tests = {
        "rule_files": [str(ROOT / "deploy/prometheus/rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "SagasStuck",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "definition": definition,
                                },
                                "exp_annotations": {
                                    "summary": f"{count:g} {definition} saga(s) stuck",
                                    "description": STUCK_DESCRIPTION,
                                },
                            }
                            for (definition,), count in stuck.items()
                        ],
                    },
                    {"eval_time": "15m", "alertname": "SagasParked", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp / "scraped_test.yml"
    # promtool reads YAML, and JSON is YAML.
    path.write_text(json.dumps(tests, indent=1))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert stuck, "no stuck saga was scraped"
