"""Walk every row of the order saga's failure table on the embedded default."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.test import Client

from sagas.events.testing import timeline, wait_for_flows
from sagas.testing import compensations_run, wait_for_sagas


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


class Command(BaseCommand):
    help = (
        "Migrate, seed, start a worker and beat, place one order per row of the "
        "failure table, print the outcome, and stop what it started."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--timeout", type=float, default=90.0)

    def handle(self, *args: Any, **options: Any) -> None:
        # The table below is the demo's output; per-transition lines go to the logs.
        for name in ("sagas", "django.request", "kombu"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for alias in settings.DATABASES:
            call_command("migrate", database=alias, verbosity=0)
        call_command("seed_catalog", stock=100, verbosity=0)
        self.stdout.write(f"database: {settings.DATABASES['default']['NAME']}")
        self.stdout.write(f"broker:   {settings.CELERY_BROKER_URL}")
        processes = self._start_processes()
        try:
            failures = self._run(options["timeout"])
            failures += self._run_choreography(options["timeout"])
        finally:
            for process in processes:
                _stop(process)
        self.stdout.write(
            "\nOperators: `DJANGO_DEBUG=true python manage.py createsuperuser`, then "
            "`DJANGO_DEBUG=true python manage.py runserver` and open "
            "http://127.0.0.1:8000/admin/sagas/saga/"
            " (choreographed flows: /admin/saga_events/flow/)"
        )
        if failures:
            raise CommandError(f"{failures} scenario(s) ended unexpectedly")
        self.stdout.write(self.style.SUCCESS("every scenario ended as expected"))

    def _start_processes(self) -> list[subprocess.Popen[bytes]]:
        log_dir = Path(settings.VAR_DIR) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        commands = {
            "worker": [*celery, "worker", "-c", "2", "-l", "info", "--without-mingle",
                       "--without-gossip"],
            "beat": [*celery, "beat", "-S", "django", "-l", "info",
                     "--pidfile", str(log_dir / "beat.pid"),
                     "--schedule", str(log_dir / "beat.schedule")],
        }  # fmt: skip
        processes = []
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("ab")
            processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "DJANGO_SETTINGS_MODULE": _settings_module()},
                )
            )
            self.stdout.write(
                f"started {name} (pid {processes[-1].pid}), log {log.name}"
            )
        return processes

    def _run(self, timeout: float) -> int:
        client = Client(HTTP_HOST="localhost")
        placed = []
        for scenario in SCENARIOS:
            response = client.post(
                "/api/orders/",
                json.dumps(scenario.body),
                content_type="application/json",
            )
            if response.status_code != 202:
                raise CommandError(
                    f"{scenario.label}: {response.status_code} {response.content!r}"
                )
            placed.append(response.json())
        self.stdout.write(f"placed {len(placed)} orders; waiting for their sagas...")
        started = time.monotonic()
        wait_for_sagas([p["saga_id"] for p in placed], timeout=timeout)
        self.stdout.write(f"all sagas finished in {time.monotonic() - started:.1f}s\n")

        header = ("scenario", "order", "saga", "steps run", "compensated", "ok")
        rows = [header]
        failures = 0
        for scenario, order in zip(SCENARIOS, placed, strict=True):
            detail = client.get(f"/api/orders/{order['id']}/").json()
            ran = tuple(
                s["name"] for s in detail["steps"] if s["status"] == "succeeded"
            )
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
            retries = (
                f" (charge x{charge['attempts']})" if charge["attempts"] > 1 else ""
            )
            rows.append(
                (
                    scenario.label,
                    detail["status"]
                    + (
                        f": {detail['failure_reason']}"
                        if detail["failure_reason"]
                        else ""
                    ),
                    detail["saga_status"],
                    (", ".join(ran) or "-") + retries,
                    " -> ".join(compensated) or "-",
                    "yes" if ok else "NO",
                )
            )
        self._table(rows)
        return failures

    def _run_choreography(self, timeout: float) -> int:
        """Place the same orders as a flow of events, with no orchestrator."""
        client = Client(HTTP_HOST="localhost")
        placed = []
        for scenario in SCENARIOS:
            response = client.post(
                "/api/orders/",
                json.dumps({**scenario.body, "mode": "choreography"}),
                content_type="application/json",
            )
            if response.status_code != 202:
                raise CommandError(
                    f"{scenario.label}: {response.status_code} {response.content!r}"
                )
            placed.append(response.json())
        self.stdout.write(
            f"\nplaced {len(placed)} orders by choreography; waiting for their flows..."
        )
        started = time.monotonic()
        wait_for_flows([p["saga_id"] for p in placed], timeout=timeout)
        self.stdout.write(f"all flows finished in {time.monotonic() - started:.1f}s\n")
        header = ("scenario", "order", "flow", "events", "ok")
        rows = [header]
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
        self._table(rows)
        return failures

    def _table(self, rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
            )


def _settings_module() -> str:
    return os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
