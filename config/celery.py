"""Celery application for the project: `celery -A config worker`."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_postrun.connect
def _close_old_connections(**kwargs: Any) -> None:
    # CELERY_DB_REUSE_MAX keeps connections across tasks; this still drops a
    # connection that broke or outlived CONN_MAX_AGE, as Django does per request.
    from django.db import close_old_connections

    close_old_connections()
