"""Choreography under kill -9: the worker running the handlers is killed again
and again while over a hundred flows are in flight; every flow ends, and no
effect happens twice. Figures go to ``test-artifacts/chaos.json``."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from sagas.events.models import Flow, FlowStatus, InboxEntry, OutboxEvent
from sagas.events.testing import wait_for_flows
from tests.choreography_support import (
    assert_each_effect_once,
    assert_orders_match_flows,
    wait_for_idle_queue,
)
from tests.helpers import place_order

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.integration,
]

CHAOS_ENV = {
    # Lost sends are re-sent after 2 s; a killed worker's messages come back
    # after 10 s.
    "SAGA_EVENTS_RELAY_LEASE": "2",
    "CELERY_VISIBILITY_TIMEOUT": "10",
    "SAGA_EVENTS_RETRY_MAX_BACKOFF": "2",
    # A flow silent past the visibility timeout has its events sent again.
    "SAGA_EVENTS_REDELIVER_AFTER": "12",
    "SANDBOX_LATENCY_MS": "30",
}
SKUS = ("WIDGET-1", "GADGET-1", "GIZMO-1")
KINDS: list[dict[str, Any]] = [
    {},
    {"token": "tok_chargeDeclined"},
    {"country": "AQ"},
    {"token": "tok_processingError"},
    {},
]
# SAGAS_SOAK=1 runs the long version.
FLOWS = 600 if os.environ.get("SAGAS_SOAK") == "1" else 120
KILLS = 40 if os.environ.get("SAGAS_SOAK") == "1" else 12
OPEN = [FlowStatus.RUNNING, FlowStatus.COMPENSATING, FlowStatus.STUCK]


def test_kill9_of_the_worker_during_flows_loses_and_duplicates_nothing(
    start_worker: Any,
    start_beat: Any,
    catalogue: None,
    client: Client,
    process_env: dict[str, str],
    artifacts_dir: Path,
) -> None:
    # given beat sweeping every second, a worker, and many flows in flight
    start_beat(**CHAOS_ENV)
    worker = start_worker("chor-victim-0", **CHAOS_ENV)
    began = time.monotonic()
    placed = [
        place_order(
            client,
            mode="choreography",
            items=[(SKUS[n % 3], 1)],
            **KINDS[n % len(KINDS)],
        )
        for n in range(FLOWS)
    ]
    flow_ids = [p["saga_id"] for p in placed]
    rng = random.Random(11)
    kills = 0
    handled_at_kills = []

    # when the worker is killed (whole process group, SIGKILL) again and again
    while kills < KILLS and (
        len(flow_ids) > Flow.objects.filter(pk__in=flow_ids).count()
        or Flow.objects.filter(pk__in=flow_ids, status__in=OPEN).exists()
    ):
        time.sleep(rng.uniform(0.2, 0.8))
        handled_at_kills.append(InboxEntry.objects.count())
        worker.kill9()
        kills += 1
        worker = start_worker(f"chor-victim-{kills}", **CHAOS_ENV)
    flows = wait_for_flows(flow_ids, timeout=240)
    elapsed = time.monotonic() - began
    # Messages of killed workers still come back after the visibility timeout.
    wait_for_idle_queue(process_env["CELERY_BROKER_URL"], timeout=90)

    # then every flow ended as the failure table says, each effect once
    assert kills >= 5
    # The kills landed while handlers were working, not before or after.
    assert len(set(handled_at_kills)) >= 5, handled_at_kills
    expected = [
        FlowStatus.COMPENSATED if KINDS[n % len(KINDS)] in KINDS[1:3] else None
        for n in range(FLOWS)
    ]
    assert [f.status for f in flows] == [e or FlowStatus.COMPLETED for e in expected]
    assert_orders_match_flows(placed)
    figures = assert_each_effect_once()
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    path = artifacts_dir / "chaos.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["choreography_kill9_worker"] = {
        "flows": len(flows),
        "faults_injected": kills,
        "lost": 0,
        "events": OutboxEvent.objects.count(),
        "flows_redelivered_by_sweeper": Flow.objects.filter(redeliveries__gt=0).count(),
        "seconds_until_all_terminal": round(elapsed, 1),
        **figures,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\nchoreography_kill9_worker: {data['choreography_kill9_worker']}")
