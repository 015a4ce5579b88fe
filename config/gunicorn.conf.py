"""Gunicorn settings: ``gunicorn -c config/gunicorn.conf.py config.wsgi``."""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))


def on_starting(server: Any) -> None:
    # A fresh count for this run: the previous run's files would be summed in.
    from sagas.metrics import wipe_multiprocess_dir

    wipe_multiprocess_dir()


def child_exit(server: Any, worker: Any) -> None:
    # prometheus-client's multiprocess mode: drop the exited worker's live gauges.
    from sagas.metrics import mark_process_dead

    mark_process_dead(worker.pid)
