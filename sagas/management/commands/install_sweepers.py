from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand

from sagas.schedule import SWEEP_TASK_NAME, install_sweep_schedule

__all__ = ["SWEEP_TASK_NAME", "Command"]


class Command(BaseCommand):
    help = (
        "Install (or update) the celery-beat rows for the saga sweeper and the "
        "events sweeper. Optional: every beat process installs missing rows as it "
        "starts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--every",
            type=float,
            default=None,
            help="Seconds between sweeps (default: SAGAS_SWEEP_INTERVAL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        installed = [install_sweep_schedule(every=options["every"])]
        if apps.is_installed("sagas.events"):
            from sagas.events.schedule import install_sweep_schedule as events

            installed.append(events(every=options["every"]))
        if not options["verbosity"]:
            return
        for task, outcome in installed:
            if outcome == "kept":
                # Keep what an operator may have changed in the admin.
                self.stdout.write(f"{task.name!r} already installed; left as it is")
            else:
                self.stdout.write(f"{outcome} {task.name!r}: every {task.interval}")
