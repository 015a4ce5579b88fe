"""Real worker, beat and Redis processes for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Self

ROOT = Path(__file__).resolve().parent.parent


class Process:
    """A subprocess in its own process group, logging to a file."""

    ready_marker = ""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self._log: IO[bytes] | None = None

    def start(self, *, wait: float = 30.0) -> Self:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Logs are appended to across runs; this run's lines start here.
        self.log_offset = offset
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.ready_marker:
            self._wait_for(self.ready_marker, offset, wait)
        return self

    def _wait_for(self, marker: str, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if marker.encode() in log.read():
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready after {timeout}s:\n{self.log_tail()}"
        )

    def log_text(self) -> str:
        """Return what this process logged since it was last started."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-lines:]
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """Kill the whole process group at once, as a crashed host would."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        else:
            # Reap any orphaned pool children left in the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


class Worker(Process):
    ready_marker = "ready."

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        concurrency: int = 2,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            name,
            [
                *wrapper,
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "-l", "info", "-P", "prefork", "-c", str(concurrency),
                "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            ],
            env,
            log_dir,
        )  # fmt: skip


class Beat(Process):
    ready_marker = "beat: Starting"

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(
            name,
            [
                sys.executable, "-m", "celery", "-A", "config", "beat",
                "-S", "django", "-l", "info",
                "--pidfile", str(log_dir / f"{name}.pid"),
                "--schedule", str(log_dir / f"{name}.schedule"),
            ],
            env,
            log_dir,
        )  # fmt: skip


class Participant(Process):
    """The warehouse service's own Celery worker (``participants.warehouse``)."""

    ready_marker = "ready."

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(
            name,
            [
                sys.executable, "-m", "celery", "-A", "participants.warehouse.app",
                "worker", "-Q", "warehouse", "-l", "info", "-P", "prefork", "-c", "2",
                "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            ],
            env,
            log_dir,
        )  # fmt: skip
