"""Gunicorn settings: ``gunicorn -c config/gunicorn.conf.py config.wsgi``.

The hooks run in the master process, where Django is not set up: they use
prometheus-client and the file system only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))


def on_starting(server: Any) -> None:
    # prometheus-client's multiprocess mode: a fresh count for this run, since
    # a previous run's files would be summed in (one directory per service).
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    # Drop the exited worker's live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
