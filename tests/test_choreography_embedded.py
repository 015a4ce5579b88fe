"""The choreographed order flow on the embedded default: SQLite files and the
filesystem broker, with a real worker process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from orders.demo import SCENARIOS
from sagas.events.models import OutboxEvent
from sagas.events.testing import wait_for_flows
from tests.helpers import assert_ledgers_balance

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.embedded,
]


def test_failure_table_by_choreography_on_sqlite_and_the_filesystem_broker(
    start_worker: Any, catalogue: None, client: Client
) -> None:
    # given the embedded default
    assert connections["default"].vendor == "sqlite"
    start_worker("embedded-choreography")

    # when one order per row of the failure table runs as a flow of events
    placed = []
    for scenario in SCENARIOS:
        response = client.post(
            "/api/orders/",
            json.dumps({**scenario.body, "mode": "choreography"}),
            content_type="application/json",
        )
        assert response.status_code == 202, response.content
        placed.append(response.json())
    wait_for_flows([p["saga_id"] for p in placed], timeout=90)

    # then every row ends as it does when orchestrated, and the books balance
    for scenario, order in zip(SCENARIOS, placed, strict=True):
        detail = client.get(f"/api/orders/{order['id']}/").json()
        assert (detail["status"], detail["saga_status"]) == (
            scenario.order_status,
            scenario.saga_status,
        ), scenario.label
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    assert_ledgers_balance(initial_stock=100)
