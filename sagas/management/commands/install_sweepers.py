from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from sagas import conf

SWEEP_TASK_NAME = "sagas: sweep timeouts, retries and lost steps"


class Command(BaseCommand):
    help = "Install (or update) the celery-beat schedule rows for the saga sweepers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--every",
            type=float,
            default=None,
            help="Seconds between sweeps (default: SAGAS_SWEEP_INTERVAL).",
        )

    def _say(self, message: str) -> None:
        if self.verbosity:
            self.stdout.write(message)

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options["verbosity"]
        every = max(1, round(options["every"] or conf.get("SAGAS_SWEEP_INTERVAL")))
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=every, period=IntervalSchedule.SECONDS
        )
        task, created = PeriodicTask.objects.get_or_create(
            name=SWEEP_TASK_NAME,
            defaults={
                "task": "sagas.sweep",
                "interval": schedule,
                # A sweep that waited longer than this is stale: the next is due.
                "expire_seconds": max(every * 5, 10),
            },
        )
        if created:
            self._say(f"installed {task.name!r}: every {every}s")
        elif options["every"] is not None:
            task.interval = schedule
            task.save(update_fields=["interval"])
            self._say(f"updated {task.name!r}: every {every}s")
        else:
            # Keep what an operator may have changed in the admin.
            self._say(f"{task.name!r} already installed; left as it is")
