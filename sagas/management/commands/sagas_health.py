from __future__ import annotations

import time
import urllib.request
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from sagas import conf


class Command(BaseCommand):
    help = (
        "Exit 0 if beat sends the sweep task on time (`beat`), or if a worker's "
        "/metrics shows a recent sweep (`sweeper --url`); exit 1 saying why not."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("check", choices=["beat", "sweeper"])
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Seconds (default: 5 sweep intervals, at least 30).",
        )
        parser.add_argument(
            "--url", help="A worker's metrics URL (sweeper), e.g. http://worker:9808/"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        max_age = options["max_age"] or conf.five_sweep_intervals()
        if options["check"] == "beat":
            age = self._beat_age()
        else:
            if not options["url"]:
                raise CommandError("sweeper needs --url")
            age = self._sweeper_age(options["url"])
        if age > max_age:
            raise CommandError(
                f"{options['check']}: last sweep {age:.0f}s ago (over {max_age:.0f}s)"
            )
        self.stdout.write(f"{options['check']}: last sweep {age:.1f}s ago")

    def _beat_age(self) -> float:
        """Return seconds since a beat last sent the sweep (CELERY_BEAT_SYNC_EVERY)."""
        last = (
            PeriodicTask.objects.filter(task="sagas.sweep", enabled=True)
            .order_by("-last_run_at")
            .values_list("last_run_at", flat=True)
            .first()
        )
        if last is None:
            raise CommandError("beat: no sweep sent yet (run install_sweepers)")
        return (timezone.now() - last).total_seconds()

    def _sweeper_age(self, url: str) -> float:
        """Return seconds since the sweep last finished, from its last-run gauge."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        runs = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "sagas_sweeper_last_run_timestamp_seconds"
        ]
        if not runs or not max(runs):
            raise CommandError("sweeper: no sweep finished yet")
        return time.time() - max(runs)
