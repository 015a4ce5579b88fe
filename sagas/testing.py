"""Helpers for test suites that run sagas: wait, drive inline, assert order.

``run_saga_inline`` drives a saga in the test's own process, step by step,
through the same engine code a worker runs (no broker, no eager mode): use it
in fast unit tests. For integration tests run a real worker and use
``wait_for_sagas``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import UUID

from django.db.models.functions import Now

from sagas import engine
from sagas.models import Saga, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    TERMINAL_SAGA_STATUSES,
    AttemptKind,
    AttemptStatus,
)


def wait_for_sagas(
    saga_ids: Iterable[UUID | str],
    *,
    timeout: float = 30.0,
    statuses: Iterable[str] = TERMINAL_SAGA_STATUSES,
    poll: float = 0.1,
) -> list[Saga]:
    """Wait until every saga is in one of ``statuses``; return them in order.

    Raise AssertionError naming the sagas still elsewhere when time runs out.
    """
    wanted = [str(saga_id) for saga_id in saga_ids]
    targets = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        sagas = {str(s.pk): s for s in Saga.objects.filter(pk__in=wanted)}
        waiting = [
            sid
            for sid in wanted
            if sid not in sagas or sagas[sid].status not in targets
        ]
        if not waiting:
            return [sagas[sid] for sid in wanted]
        if time.monotonic() > deadline:
            summary = ", ".join(
                f"{sid}={sagas[sid].status if sid in sagas else 'missing'}"
                for sid in waiting[:10]
            )
            raise AssertionError(
                f"{len(waiting)} of {len(wanted)} sagas not in {sorted(targets)} "
                f"after {timeout}s: {summary}"
            )
        time.sleep(poll)


def run_saga_inline(saga_id: UUID | str, *, max_steps: int = 1000) -> Saga:
    """Execute a saga's attempts in this process until it stops; return it.

    Backoffs held in the database are dispatched as soon as they are due, as
    the sweeper would.
    """
    for _ in range(max_steps):
        saga = Saga.objects.select_related("current_attempt").get(pk=saga_id)
        attempt = saga.current_attempt
        if saga.status not in ACTIVE_SAGA_STATUSES or attempt is None:
            return saga
        if attempt.status == AttemptStatus.SCHEDULED:
            Saga.objects.filter(pk=saga.pk).update(wake_at=Now())
            StepAttempt.objects.filter(pk=attempt.pk).update(not_before=Now())
            engine.sweep()
            continue
        engine.step_execute(saga.pk, attempt.pk)
    raise AssertionError(f"saga {saga_id} still active after {max_steps} steps")


def steps_run(saga_id: UUID | str, *, kind: str = AttemptKind.ACTION) -> list[str]:
    """Return the steps whose ``kind`` attempt succeeded, in the order they ran."""
    return list(
        StepAttempt.objects.filter(
            saga_id=saga_id, kind=kind, status=AttemptStatus.SUCCEEDED
        )
        .order_by("id")
        .values_list("step", flat=True)
    )


def compensations_run(saga_id: UUID | str) -> list[str]:
    """Return the steps compensated, in the order the compensations succeeded."""
    return steps_run(saga_id, kind=AttemptKind.COMPENSATION)
