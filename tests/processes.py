"""The suite's own kinds of process, on the project's launcher (sagas.processes)."""

from __future__ import annotations

from pathlib import Path

from sagas.processes import Process as BaseProcess
from sagas.processes import Worker

ROOT = Path(__file__).resolve().parent.parent


class Process(BaseProcess):
    """A command run from the project root (gunicorn's config file is relative)."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path
    ) -> None:
        super().__init__(name, args, env, log_dir, cwd=ROOT)


class Participant(Worker):
    """The warehouse service's own Celery worker (``participants.warehouse``)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(
            name, env, log_dir, app="participants.warehouse.app",
            options=("-Q", "warehouse"), cwd=ROOT,
        )  # fmt: skip
