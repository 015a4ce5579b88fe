"""Walk every row of the order saga's failure table on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
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
        timeout, write = options["timeout"], self.stdout.write
        client = Client(HTTP_HOST="localhost")
        demo.prepare(write)
        with demo.worker_and_beat(Path(settings.VAR_DIR) / "logs", write):
            failures = demo.walk_orchestration(client, timeout, write)
            failures += demo.walk_choreography(client, timeout, write)
        write(demo.OPERATORS)
        if failures:
            raise CommandError(f"{failures} scenario(s) ended unexpectedly")
        write(self.style.SUCCESS("every scenario ended as expected"))
