"""A Celery worker subprocess with the benchmark's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """``celery -A config worker`` (prefork, 2 processes) in its own session."""

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
        self.app = app
        self.node = f"{name}@{socket.gethostname()}"
        self.env = {**env, "LOG_LEVEL": loglevel.upper()}
        self.log_path = log_dir / f"{name}.log"
        self.args = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "-P", "prefork", "-c", str(concurrency), "-l", loglevel,
            "-n", self.node, "--without-gossip", "--without-mingle",
            "-I", "bench.tasks",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout: float = 60.0) -> Worker:
        """Start the worker and return once it answers a ping."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            if self.app.control.ping(destination=[self.node], timeout=0.5):
                return self
        self.stop()
        raise RuntimeError(f"worker not ready after {timeout}s; see {self.log_path}")

    def pause(self) -> None:
        """Freeze the worker, so that a burst can be queued before any of it runs.

        A stopped process is the only reliable hold: with the Redis transport
        the worker keeps fetching after ``cancel_consumer`` has answered "ok".
        The one message a pending BRPOP may take meanwhile waits in its socket.
        """
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let the frozen worker run again."""
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Shut the worker down warmly, then kill what is left of its group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
