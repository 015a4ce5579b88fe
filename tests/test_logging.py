"""Log lines carry the request id (web), the Celery task id (workers) and, for a
step, the saga id: read from the JSON logs of real gunicorn and worker processes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sagas.testing import wait_for_sagas
from tests.helpers import order_body
from tests.observability import Gunicorn, free_port

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def test_request_and_task_ids_are_bound_in_every_line(
    worker: Any, catalogue: None, process_env: dict[str, str], log_dir: Path
) -> None:
    # given: a web process logging JSON, like the worker
    web = Gunicorn("logging-web", process_env, log_dir, free_port()).start()
    try:
        # when: an order comes in with a proxy's request id
        request = urllib.request.Request(
            f"{web.base}/api/orders/",
            data=json.dumps(order_body(token="tok_chargeDeclined")).encode(),
            headers={"Content-Type": "application/json", "X-Request-ID": "req-42"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            echoed = response.headers["X-Request-ID"]
            saga_id = json.loads(response.read())["saga_id"]
        wait_for_sagas([saga_id], timeout=30)
    finally:
        web.stop()

    # then: the web's lines about the saga carry the request id
    web_lines = [
        line for line in _json_lines(web.log_path) if line.get("saga_id") == saga_id
    ]
    assert echoed == "req-42"
    assert web_lines, "no web line names the saga"
    assert {line.get("request_id") for line in web_lines} == {"req-42"}
    # and every worker line about the saga carries the task running its step
    worker_lines = [
        line for line in _json_lines(worker.log_path) if line.get("saga_id") == saga_id
    ]
    steps = [line for line in worker_lines if line.get("task") == "sagas.step_execute"]
    assert worker_lines, "no worker line names the saga"
    assert len(steps) == len(worker_lines)
    assert all(line.get("task_id") for line in steps)
    # reserve, charge (declined) and release ran inline in the task the first
    # step's message started
    assert len({line["task_id"] for line in steps}) == 1
    assert {line.get("step") for line in steps} >= {"reserve_stock", "charge_payment"}
    assert {line["event"] for line in steps} >= {"saga.transition"}
