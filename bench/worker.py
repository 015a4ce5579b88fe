"""A Celery worker subprocess with the benchmark's settings."""

from __future__ import annotations

import socket
from pathlib import Path

from celery import Celery

from sagas import processes

ROOT = Path(__file__).resolve().parent.parent


class Worker(processes.Worker):
    """``celery -A config worker`` (prefork) that counts as ready once it answers
    a ping: at the benchmark's log levels it may log nothing at start-up.

    ``pause`` is the only reliable hold before a burst: with the Redis transport
    the worker keeps fetching after ``cancel_consumer`` has answered "ok". The
    one message a pending BRPOP may take meanwhile waits in its socket.
    """

    # Ready means answering a ping (the log stays empty below INFO).
    ready_marker = ""

    def __init__(
        self,
        app: Celery,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        loglevel: str = "warning",
        concurrency: int = 2,
    ) -> None:
        super().__init__(
            name,
            {**env, "LOG_LEVEL": loglevel.upper()},
            log_dir,
            concurrency=concurrency,
            loglevel=loglevel,
            options=("-I", "bench.tasks"),
            cwd=ROOT,
            stop_timeout=30.0,
        )
        self.app = app
        self.node = f"{name}@{socket.gethostname()}"

    def after_start_check(self) -> bool:
        """Return whether the worker answers a ping (fail if it has exited)."""
        pong = self.app.control.ping(destination=[self.node], timeout=0.5)
        return super().after_start_check() and bool(pong)
