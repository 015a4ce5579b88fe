"""Celery application for the project: `celery -A config worker`."""

from __future__ import annotations

import os
from typing import Any

import structlog
from celery import Celery, signals

from sagas import redis_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A worker must survive Redis going away mid-restore (sagas.redis_transport).
redis_transport.install()

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    # Every line a task logs carries its id and name (structlog contextvars).
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=getattr(task, "name", None)
    )


@signals.task_postrun.connect
def _close_old_connections(**kwargs: Any) -> None:
    # CELERY_DB_REUSE_MAX keeps connections across tasks; this still drops a
    # connection that broke or outlived CONN_MAX_AGE, as Django does per request.
    from django.db import close_old_connections

    close_old_connections()
    structlog.contextvars.clear_contextvars()


@signals.worker_init.connect
def _fresh_metrics(**kwargs: Any) -> None:
    # The main worker process, before the pool forks: start this run's count.
    from sagas import metrics

    metrics.wipe_multiprocess_dir()


@signals.worker_process_init.connect
def _start_tracing(**kwargs: Any) -> None:
    # After the fork: each pool process has its own span exporter thread.
    from sagas import tracing

    tracing.configure()  # nothing unless OTEL_TRACES_EXPORTER is set


@signals.worker_process_shutdown.connect
def _pool_process_exit(pid: int | None = None, **kwargs: Any) -> None:
    from sagas import metrics, tracing

    tracing.shutdown()
    metrics.mark_process_dead(pid or os.getpid())


@signals.worker_ready.connect
def _serve_metrics(**kwargs: Any) -> None:
    # In the main process once the pool has forked, so no pool process
    # inherits the listening socket. Off unless SAGAS_WORKER_METRICS_PORT is set.
    from sagas import metrics

    metrics.start_worker_server()
