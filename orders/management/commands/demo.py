"""Walk every row of the order saga's failure table on the embedded default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.test import Client

from orders import demo


class Command(BaseCommand):
    help = (
        "Migrate, seed, start a worker and beat, place one order per row of the "
        "failure table, print the outcome, and stop what it started."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--timeout", type=float, default=90.0)

    def handle(self, *args: Any, **options: Any) -> None:
        # The tables are the demo's output; per-transition lines go to the logs.
        for name in ("sagas", "django.request", "kombu"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for alias in settings.DATABASES:
            call_command("migrate", database=alias, verbosity=0)
        call_command("seed_catalog", stock=100, verbosity=0)
        self.stdout.write(f"database: {settings.DATABASES['default']['NAME']}")
        self.stdout.write(f"broker:   {settings.CELERY_BROKER_URL}")
        client = Client(HTTP_HOST="localhost")
        timeout, write = options["timeout"], self.stdout.write
        with demo.worker_and_beat(Path(settings.VAR_DIR) / "logs", write):
            failures = demo.walk_orchestration(client, timeout, write)
            failures += demo.walk_choreography(client, timeout, write)
        self.stdout.write(demo.OPERATORS)
        if failures:
            raise CommandError(f"{failures} scenario(s) ended unexpectedly")
        self.stdout.write(self.style.SUCCESS("every scenario ended as expected"))
