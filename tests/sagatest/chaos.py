"""Fault injection at the broker level, enabled in worker processes by env vars."""

from __future__ import annotations

from typing import Any

from celery.signals import after_task_publish

_DUPLICATE_HEADER = "x-test-duplicate"


def duplicate_every_step_message() -> None:
    """Publish every step message a second time, as an at-least-once broker may."""

    @after_task_publish.connect(weak=False)
    def _again(
        sender: str | None = None, headers: Any = None, body: Any = None, **_: Any
    ) -> None:
        if sender != "sagas.step_execute" or (headers or {}).get(_DUPLICATE_HEADER):
            return
        from sagas.tasks import step_execute_task

        args = body[0] if isinstance(body, (list, tuple)) else body.get("args")
        step_execute_task.apply_async(args=args, headers={_DUPLICATE_HEADER: "1"})
