"""The order saga's failure table as a walk-through: one order per row, placed
over the HTTP API, by orchestration and by choreography, with a report of how
each ended (``manage.py demo`` runs it; the embedded suites reuse the rows)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from sagas.events.testing import timeline, wait_for_flows
from sagas.processes import Beat, Worker
from sagas.testing import compensations_run, wait_for_sagas

Write = Callable[[str], Any]


@dataclass(frozen=True)
class Scenario:
    label: str
    body: dict[str, Any]
    order_status: str
    saga_status: str
    steps_run: tuple[str, ...]
    compensated: tuple[str, ...]
    charge_attempts: int


def _body(token: str = "tok_visa", country: str = "DE", qty: int = 1) -> dict[str, Any]:
    return {
        "customer_id": "demo",
        "items": [
            {"sku": "WIDGET-1", "quantity": qty},
            {"sku": "GIZMO-1", "quantity": 1},
        ],
        "payment_token": token,
        "shipping_address": {
            "name": "Grace Hopper",
            "line1": "1 Compiler Way",
            "city": "Arlington",
            "postal_code": "22201",
            "country": country,
        },
    }


ALL = ("reserve_stock", "charge_payment", "create_shipment", "send_confirmation")
SCENARIOS = (
    Scenario("happy path", _body(), "confirmed", "completed", ALL, (), 1),
    Scenario("out of stock", _body(qty=500), "failed", "compensated", (), (), 0),
    Scenario(
        "card declined",
        _body(token="tok_chargeDeclined"),
        "failed",
        "compensated",
        ALL[:1],
        ("reserve_stock",),
        1,
    ),
    Scenario(
        "ship to AQ",
        _body(country="AQ"),
        "failed",
        "compensated",
        ALL[:2],
        ("charge_payment", "reserve_stock"),
        1,
    ),
    Scenario(
        "processing error, retried",
        _body(token="tok_processingError"),
        "confirmed",
        "completed",
        ALL,
        (),
        2,
    ),
)

OPERATORS = (
    "\nOperators: `DJANGO_DEBUG=true python manage.py createsuperuser`, then "
    "`DJANGO_DEBUG=true python manage.py runserver` and open "
    "http://127.0.0.1:8000/admin/sagas/saga/"
    " (choreographed flows: /admin/saga_events/flow/)"
)


def prepare(write: Write) -> None:
    """Migrate every database, seed the catalogue, and name the database and broker."""
    # The tables are the demo's output; per-transition lines go to the logs.
    for name in ("sagas", "django.request", "kombu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for alias in settings.DATABASES:
        call_command("migrate", database=alias, verbosity=0)
    call_command("seed_catalog", stock=100, verbosity=0)
    write(f"database: {settings.DATABASES['default']['NAME']}")
    write(f"broker:   {settings.CELERY_BROKER_URL}")


@contextmanager
def worker_and_beat(log_dir: Path, write: Write) -> Iterator[None]:
    """Run a worker and beat with this process's settings until the block ends."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get(
            "DJANGO_SETTINGS_MODULE", "config.settings"
        ),
    }
    with ExitStack() as stack:
        for process in (
            Worker("worker", env, log_dir, stop_timeout=20.0),
            Beat("beat", env, log_dir, stop_timeout=20.0),
        ):
            stack.enter_context(process)
            write(f"started {process.name} (pid {process.pid}), log {process.log_path}")
        yield


def walk_orchestration(client: Client, timeout: float, write: Write) -> int:
    """Place one order per scenario, report how each saga ended; return misses."""
    placed = _place(client, {})
    write(f"placed {len(placed)} orders; waiting for their sagas...")
    started = time.monotonic()
    wait_for_sagas([p["saga_id"] for p in placed], timeout=timeout)
    write(f"all sagas finished in {time.monotonic() - started:.1f}s\n")
    rows = [("scenario", "order", "saga", "steps run", "compensated", "ok")]
    failures = 0
    for scenario, order in zip(SCENARIOS, placed, strict=True):
        detail = client.get(f"/api/orders/{order['id']}/").json()
        ran = tuple(s["name"] for s in detail["steps"] if s["status"] == "succeeded")
        compensated = tuple(compensations_run(detail["saga_id"]))
        charge = next(s for s in detail["steps"] if s["name"] == "charge_payment")
        ok = (
            detail["status"] == scenario.order_status
            and detail["saga_status"] == scenario.saga_status
            and ran == scenario.steps_run
            and compensated == scenario.compensated
            and charge["attempts"] == scenario.charge_attempts
        )
        failures += not ok
        retries = f" (charge x{charge['attempts']})" if charge["attempts"] > 1 else ""
        reason = f": {detail['failure_reason']}" if detail["failure_reason"] else ""
        rows.append(
            (
                scenario.label,
                detail["status"] + reason,
                detail["saga_status"],
                (", ".join(ran) or "-") + retries,
                " -> ".join(compensated) or "-",
                "yes" if ok else "NO",
            )
        )
    for line in table(rows):
        write(line)
    return failures


def walk_choreography(client: Client, timeout: float, write: Write) -> int:
    """Place the same orders as a flow of events, with no orchestrator."""
    placed = _place(client, {"mode": "choreography"})
    write(f"\nplaced {len(placed)} orders by choreography; waiting for their flows...")
    started = time.monotonic()
    wait_for_flows([p["saga_id"] for p in placed], timeout=timeout)
    write(f"all flows finished in {time.monotonic() - started:.1f}s\n")
    rows = [("scenario", "order", "flow", "events", "ok")]
    failures = 0
    for scenario, order in zip(SCENARIOS, placed, strict=True):
        detail = client.get(f"/api/orders/{order['id']}/").json()
        ok = (
            detail["status"] == scenario.order_status
            and detail["saga_status"] == scenario.saga_status
        )
        failures += not ok
        rows.append(
            (
                scenario.label,
                detail["status"],
                detail["saga_status"],
                " > ".join(timeline(order["saga_id"])[1:]),
                "yes" if ok else "NO",
            )
        )
    for line in table(rows):
        write(line)
    return failures


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Return ``rows`` as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]


def _place(client: Client, extra: dict[str, str]) -> list[dict[str, Any]]:
    placed = []
    for scenario in SCENARIOS:
        response = client.post(
            "/api/orders/",
            json.dumps({**scenario.body, **extra}),
            content_type="application/json",
        )
        if response.status_code != 202:
            raise CommandError(
                f"{scenario.label}: {response.status_code} {response.content!r}"
            )
        placed.append(response.json())
    return placed
