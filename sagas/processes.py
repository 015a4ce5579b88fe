"""Celery worker and beat processes of a project, for its demo, tests and benchmarks.

Each process runs in a session of its own, appends its output to
``<log_dir>/<name>.log`` and counts as started once that log says it is ready.
mirakuru's executor does the waiting and the stopping (the stop signal to the
whole process group, SIGKILL after the timeout), and kills at exit whatever a
process left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self, TypedDict, Unpack

from mirakuru import Executor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import ExecutorError, ProcessFinishedWithError


class ProcessError(RuntimeError):
    """A process exited or stayed silent before it was ready."""


class Limits(TypedDict, total=False):
    """Where a process runs and how long it may take to start and to stop."""

    cwd: Path | None
    timeout: float  # seconds to be ready (60)
    stop_timeout: float  # seconds to exit after the stop signal (15)


class Process(Executor):
    """A command in a session of its own, logging to a file.

    The command gets exactly ``env``, not this process's environment.
    """

    # Text the log shows once the process is ready; empty: ready at once.
    ready_marker = ""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        **limits: Unpack[Limits],
    ) -> None:
        cwd = limits.get("cwd")
        super().__init__(
            list(command),
            cwd=None if cwd is None else str(cwd),
            timeout=limits.get("timeout", 60.0),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.name = name
        self.env = env
        self.start_timeout = limits.get("timeout", 60.0)
        self.stop_timeout = limits.get("stop_timeout", 15.0)
        self.log_path = log_dir / f"{name}.log"
        # Logs are appended to across starts; the current start's lines begin here.
        self.log_offset = 0
        self._log: IO[bytes] | None = None

    @property
    def envvars(self) -> dict[str, str]:
        """Return the command's environment, marked so that leftovers can be found."""
        return {**self.env, ENV_UUID: self._uuid}

    @property
    def pid(self) -> int:
        """Return the process id (also its process group's)."""
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Return whether the process runs."""
        return self.running()

    def start(self) -> Self:
        """Start the process and return once its log says it is ready."""
        self._close_log()
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self._stdout = self._log
        self._timeout = self.start_timeout
        try:
            return super().start()
        except ExecutorError as error:
            raise ProcessError(f"{self.name}: {error}\n{self.log_tail()}") from error

    def pre_start_check(self) -> bool:
        """Return False: each instance starts a process of its own."""
        return False

    def after_start_check(self) -> bool:
        """Return whether the log shows the ready marker; fail if the process ended."""
        if self.process is not None and self.process.poll() is not None:
            raise ProcessError(f"{self.name} exited early:\n{self.log_tail()}")
        return self.ready_marker in self.log_text()

    def stop(
        self,
        stop_signal: int | None = None,
        expected_returncode: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Self:
        """Stop the process group (warmly, then with SIGKILL after ``timeout``)."""
        try:
            if self.process is not None and self.process.poll() is not None:
                # Exited by itself: reap whatever is left of its group.
                return self.kill()
            if self.process is not None:
                # A paused process must run to handle the stop signal.
                os.killpg(self.process.pid, signal.SIGCONT)
            self._timeout = self.stop_timeout if timeout is None else timeout
            # How a process answers the stop signal is not this method's concern.
            with contextlib.suppress(ProcessFinishedWithError):
                super().stop(stop_signal, expected_returncode)
            return self
        finally:
            self._close_log()

    def kill9(self) -> None:
        """Kill the whole process group at once, as a crashed host would."""
        self.kill()

    def pause(self) -> None:
        """Freeze the process group (SIGSTOP)."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let the frozen process group run again."""
        os.killpg(self.pid, signal.SIGCONT)

    def log_text(self) -> str:
        """Return what the process logged since it was last started."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the log file."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def celery(app: str, *args: str) -> list[str]:
    """Return the command line of ``celery -A app ARGS`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", app, *args]


class Worker(Process):
    """``celery worker`` (prefork), named ``<name>@<host>``."""

    ready_marker = "ready."

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        app: str = "config",
        concurrency: int = 2,
        loglevel: str = "info",
        options: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        **limits: Unpack[Limits],
    ) -> None:
        command = celery(
            app, "worker", "-P", "prefork", "-c", str(concurrency), "-l", loglevel,
            "-n", f"{name}@%h", "--without-gossip", "--without-mingle", *options,
        )  # fmt: skip
        super().__init__(name, [*wrapper, *command], env, log_dir, **limits)


class Beat(Process):
    """``celery beat`` with django-celery-beat's scheduler (schedules in the DB)."""

    ready_marker = "beat: Starting"

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        app: str = "config",
        **limits: Unpack[Limits],
    ) -> None:
        command = celery(
            app, "beat", "-S", "django", "-l", "info",
            "--pidfile", str(log_dir / f"{name}.pid"),
            "--schedule", str(log_dir / f"{name}.schedule"),
        )  # fmt: skip
        super().__init__(name, command, env, log_dir, **limits)
