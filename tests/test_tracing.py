"""One trace per saga, across real processes: gunicorn takes the order, a prefork
worker runs every step and compensation, the sweeper re-sends a lost message.

Each process exports spans with its ordinary OTLP/HTTP exporter, configured by
the standard OTEL_* variables, to a receiver in this test process that keeps
them in memory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sagas.models import StepAttempt
from sagas.states import SagaStatus
from sagas.testing import wait_for_sagas
from tests.helpers import order_body
from tests.observability import Gunicorn, SpanReceiver, free_port, request

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

STEP_SPANS = [
    "reserve_stock action",
    "charge_payment action",
    "create_shipment action",
    "charge_payment compensation",
    "reserve_stock compensation",
]


@pytest.fixture
def receiver() -> Iterator[SpanReceiver]:
    server = SpanReceiver()
    yield server
    server.close()


def _step_spans(spans: list[dict[str, Any]], saga_id: str) -> list[dict[str, Any]]:
    ran = [
        s
        for s in spans
        if s["attributes"].get("saga.id") == saga_id
        and s["attributes"].get("saga.step.outcome") not in (None, "fenced")
    ]
    return sorted(ran, key=lambda s: s["start"])


def test_order_saga_is_one_trace_from_request_to_last_compensation(
    receiver: SpanReceiver,
    process_env: dict[str, str],
    log_dir: Path,
    start_worker: Any,
    start_beat: Any,
    catalogue: None,
) -> None:
    # given: a traced web process, and no worker yet; the sweeper re-sends a
    # step not finished within a second
    lease = {"SAGAS_DISPATCH_LEASE": "1"}
    env = {**process_env, **lease, **receiver.env("web")}
    web = Gunicorn("traced-web", env, log_dir, free_port()).start()
    try:
        status, order = request(f"{web.base}/api/orders/", order_body(country="AQ"))
    finally:
        web.stop()

    assert status == 202, order
    saga_id = order["saga_id"]
    # when: the first step's message is lost, so the sweeper must re-send it,
    # and the carrier refuses AQ, so payment is refunded and stock released
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    traced = receiver.env("worker")
    start_worker("traced-worker", **lease, **traced)
    start_beat(every=1.0)
    (saga,) = wait_for_sagas([saga_id], timeout=60)
    assert saga.status == SagaStatus.COMPENSATED

    # Each worker process exports its spans in its own batches: wait for the
    # steps' and the sweeper's.
    deadline = time.monotonic() + 20
    while len(_step_spans(receiver.snapshot(), saga_id)) < len(STEP_SPANS) or not [
        s for s in receiver.snapshot() if s["name"].startswith("sweeper re-send")
    ]:
        assert time.monotonic() < deadline, _step_spans(receiver.snapshot(), saga_id)
        time.sleep(0.2)
    spans = receiver.snapshot()

    # then: the request's trace holds a "saga" span, and under it every step and
    # compensation in order, the re-sent one included, and the sweeper's re-send
    (http,) = [
        s
        for s in spans
        if s["service"] == "web" and s["kind"] == 2 and "orders" in s["name"]
    ]
    trace_id = http["trace_id"]
    (saga_span,) = [s for s in spans if s["name"] == "saga order_checkout"]
    assert saga_span["trace_id"] == trace_id
    steps = _step_spans(spans, saga_id)
    assert [s["name"] for s in steps] == STEP_SPANS
    assert {s["trace_id"] for s in steps} == {trace_id}
    assert {s["parent_id"] for s in steps} == {saga_span["span_id"]}
    assert {s["service"] for s in steps} == {"worker"}
    # The first step ran once, on its second dispatch (the sweeper's re-send).
    reserve = StepAttempt.objects.get(
        saga_id=saga_id, step="reserve_stock", kind="action"
    )
    assert reserve.dispatches == 2
    assert steps[0]["attributes"]["saga.step.dispatches"] == "2"
    resends = [s for s in spans if s["name"] == "sweeper re-send reserve_stock action"]
    assert [s["trace_id"] for s in resends] == [trace_id]
    # and the engine's log lines from the worker's steps name the same trace
    # (Celery's own "Task ... succeeded" line belongs to the message's trace)
    lines = [
        json.loads(raw)
        for raw in (log_dir / "traced-worker.log").read_text().splitlines()
        if raw.startswith("{") and saga_id in raw
    ]
    engine_lines = [
        line
        for line in lines
        if line.get("task") == "sagas.step_execute"
        and line.get("logger") == "sagas.engine"
    ]
    assert engine_lines
    assert {line.get("trace_id") for line in engine_lines} == {trace_id}
