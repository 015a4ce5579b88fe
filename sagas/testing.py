"""Helpers for test suites that run sagas: drive, break, wait, assert.

- ``run_saga_inline`` drives a saga in the test's own process, step by step,
  through the same engine code a worker runs (no broker, no eager mode);
- ``wait_for_sagas`` waits for real workers (see the ``saga_worker`` fixture
  of the pytest plugin, ``sagas.pytest_plugin``);
- ``steps_run`` / ``compensations_run`` say what ran, in order;
- fault injection: ``failing_permanently``, ``crashing_after``,
  ``compensation_failing_once``, and ``assert_compensates_in_reverse``, which
  fails each step in turn and checks what was compensated;
- time: ``advance_database_clock`` and ``SagaClock`` (deadlines, leases and
  backoffs are computed by the database clock, so freezing Python's clock alone
  does not move them).

Fault injection swaps a registered step's function in this process only: use
it with inline runs or the in-process ``saga_worker``, not with worker
subprocesses.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now

from sagas import engine, registry
from sagas.definition import Step, StepContext, StepKind
from sagas.errors import PermanentError, TransientError, WorkerLost
from sagas.models import Saga, StepAttempt, SweeperHeartbeat
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    TERMINAL_SAGA_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
)

__all__ = [
    "SagaClock",
    "WorkerCrash",
    "advance_database_clock",
    "assert_compensates_in_reverse",
    "compensation_failing_once",
    "compensations_run",
    "crashing_after",
    "failing_permanently",
    "recover_lost_step",
    "run_saga_inline",
    "steps_run",
    "sweep_now",
    "wait_for_sagas",
]


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


# --- fault injection ------------------------------------------------------------


class WorkerCrash(WorkerLost):
    """The worker process died: nothing after the raise point commits.

    A ``WorkerLost``, so the engine does not record it as a step failure: the
    step's transaction rolls back and its attempt stays dispatched, exactly as
    when ``kill -9`` hits a worker. The sweeper re-sends it after the lease.
    """


StepFunction = Callable[[StepContext], Any]


@contextlib.contextmanager
def _replaced(
    definition: str, index: int, kind: str, make: Callable[[StepFunction], StepFunction]
) -> Iterator[Step]:
    """Swap one step function of a registered definition while the block runs."""
    step = registry.get(definition).steps[index]
    field = "action" if kind == AttemptKind.ACTION else "compensation"
    original = getattr(step, field)
    if original is None:
        raise ValueError(f"{definition} step {index} ({step.name}) has no {field}")
    # Steps are frozen dataclasses; the swap is undone below whatever happens.
    object.__setattr__(step, field, make(original))
    try:
        yield step
    finally:
        object.__setattr__(step, field, original)


@contextlib.contextmanager
def failing_permanently(definition: str, index: int) -> Iterator[Step]:
    """Make the action of step ``index`` fail for good, without running it."""

    def make(original: StepFunction) -> StepFunction:
        def fail(ctx: StepContext) -> Any:
            raise PermanentError(f"injected permanent failure in {ctx.step}")

        return fail

    with _replaced(definition, index, AttemptKind.ACTION, make) as step:
        yield step


@contextlib.contextmanager
def crashing_after(definition: str, index: int, *, times: int = 1) -> Iterator[Step]:
    """Kill the worker ``times`` times right after step ``index``'s action ran.

    The action's calls to the outside world have happened, its database writes
    and the step's record have not: the step must be safe to run again.
    """
    left = [times]

    def make(original: StepFunction) -> StepFunction:
        def run_then_crash(ctx: StepContext) -> Any:
            result = original(ctx)
            if left[0] > 0:
                left[0] -= 1
                raise WorkerCrash(f"worker died after {ctx.step} ran")
            return result

        return run_then_crash

    with _replaced(definition, index, AttemptKind.ACTION, make) as step:
        yield step


@contextlib.contextmanager
def compensation_failing_once(definition: str, index: int) -> Iterator[Step]:
    """Make the compensation of step ``index`` fail transiently on its first call."""
    left = [1]

    def make(original: StepFunction) -> StepFunction:
        def flaky(ctx: StepContext) -> Any:
            if left[0] > 0:
                left[0] -= 1
                raise TransientError(f"injected transient failure in {ctx.step}")
            return original(ctx)

        return flaky

    with _replaced(definition, index, AttemptKind.COMPENSATION, make) as step:
        yield step


def sweep_now() -> int:
    """Run one sweeper pass, as beat would; return how many sagas it handled."""
    return engine.sweep()


def recover_lost_step(saga_id: UUID | str) -> Saga:
    """Recover a saga whose worker died, as production does; return it.

    Move the database clock to the saga's next wake-up (the end of the
    dispatch lease, or the step's deadline if that comes first), run one sweep
    (which re-sends the unfinished step, or times it out and retries it) and
    drive the saga inline to its end.
    """
    row = (
        Saga.objects.filter(pk=saga_id, wake_at__isnull=False)
        .annotate(db_now=Now())
        .values("wake_at", "db_now")
        .first()
    )
    if row is not None:
        due_in = (row["wake_at"] - row["db_now"]).total_seconds()
        advance_database_clock(max(due_in, 0.0) + 0.01)
    engine.sweep()
    return run_saga_inline(saga_id)


@dataclass(frozen=True)
class FailureCase:
    """What happened when one step of a definition failed for good."""

    index: int
    step: str
    saga_id: UUID
    steps_run: list[str]
    compensated: list[str]


def assert_compensates_in_reverse(
    definition: str,
    *,
    context: dict[str, Any] | Callable[[int], dict[str, Any]] | None = None,
    start: Callable[[str, dict[str, Any]], UUID | str] | None = None,
) -> list[FailureCase]:
    """Fail each step in turn and check exactly the completed ones were undone.

    For every step up to and including the pivot (a retriable step is never
    compensated), start a saga, make that step's action fail permanently and
    drive the saga inline; then assert it ended ``compensated``, that the steps
    before it ran, and that their compensations ran in strict reverse order.
    ``context`` is the saga's context (or a function of the failing index);
    ``start(business_key, context)`` starts the saga your way (e.g. through a
    service that writes business rows too) and returns its id.
    """
    steps = registry.get(definition).steps
    cases: list[FailureCase] = []
    for index, step in enumerate(steps):
        if step.kind == StepKind.RETRIABLE:
            break
        data = context(index) if callable(context) else dict(context or {})
        key = f"failure-at-{index}:{uuid.uuid4()}"
        with failing_permanently(definition, index):
            if start is None:
                with transaction.atomic():
                    saga_id: UUID | str = engine.saga_start(
                        definition, business_key=key, context=data
                    ).pk
            else:
                saga_id = start(key, data)
            saga = run_saga_inline(saga_id)
        ran = steps_run(saga.pk)
        undone = compensations_run(saga.pk)
        expected_run = [s.name for s in steps[:index]]
        expected_undone = [s.name for s in reversed(steps[:index]) if s.compensation]
        where = f"{definition}: failure at step {index} ({step.name})"
        assert saga.status == SagaStatus.COMPENSATED, f"{where}: {saga.status}"
        assert ran == expected_run, f"{where}: ran {ran}, expected {expected_run}"
        assert undone == expected_undone, (
            f"{where}: compensated {undone}, expected {expected_undone}"
        )
        cases.append(FailureCase(index, step.name, saga.pk, ran, undone))
    return cases


# --- time -----------------------------------------------------------------------


def advance_database_clock(seconds: float) -> None:
    """Act as if the database clock moved ``seconds`` forward.

    The engine stores deadlines, leases, backoffs and progress times from the
    database clock (``Now()``) and compares them with it; moving every stored
    time back by ``seconds`` is the same as the clock moving forward. The
    sweeper's heartbeat ages too.
    """
    delta = timedelta(seconds=seconds)
    with transaction.atomic():
        Saga.objects.filter(wake_at__isnull=False).update(wake_at=F("wake_at") - delta)
        Saga.objects.update(updated_at=F("updated_at") - delta)
        for field in ("not_before", "deadline_at", "dispatched_at", "started_at"):
            StepAttempt.objects.filter(**{f"{field}__isnull": False}).update(
                **{field: F(field) - delta}
            )
        SweeperHeartbeat.objects.update(swept_at=F("swept_at") - delta)


class SagaClock:
    """Python's clock (time-machine) and the database's, moved together.

    ``advance(seconds)`` moves Python's ``time``/``datetime`` forward with
    time-machine and the stored saga times back with ``advance_database_clock``.
    The database server's own clock does not move: anything comparing a time
    stored *after* the call with ``Now()`` sees real time, which is what a
    test wants (only what was waiting is due).
    """

    def __init__(self) -> None:
        import time_machine

        self._traveller = time_machine.travel(datetime.now(tz=UTC), tick=True)
        self._coordinates: Any = None

    def __enter__(self) -> SagaClock:
        self._coordinates = self._traveller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._traveller.stop()

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` forward."""
        self._coordinates.shift(timedelta(seconds=seconds))
        advance_database_clock(seconds)
