"""gunicorn settings: ``gunicorn -c config/gunicorn.py config.wsgi:application``.

Threaded workers (gthread): a client that stalls mid-request holds one thread,
not the process, so other requests go on. A buffering proxy in front
(deploy/nginx.conf) keeps slow clients away from the threads altogether.
Every figure comes from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
# gunicorn's own WEB_CONCURRENCY convention, then ours.
workers = _int("GUNICORN_WORKERS", _int("WEB_CONCURRENCY", 2))
threads = _int("GUNICORN_THREADS", 8)
# Seconds a worker may stay silent before the arbiter restarts it, and may
# take to finish its requests on a graceful restart.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Seconds an idle keep-alive connection is held open (the proxy reuses them).
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then, staggered, to bound slow leaks.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)
# Bounds on the request head; bodies are bounded by DATA_UPLOAD_MAX_MEMORY_SIZE.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# Only the proxy may claim a request came over HTTPS (X-Forwarded-Proto).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
# Share the application's memory between workers and fail fast on import errors.
preload_app = True


# The hooks run in the master process, where Django is not set up: they use
# prometheus-client and the file system only.


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
