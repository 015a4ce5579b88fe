"""Generated sagas: random definitions and random fates, checked by invariants.

Hypothesis draws a definition (1-6 steps: compensatable, then at most one
pivot, then retriable steps) and a fate for every attempt: success, transient
or permanent failure, partial failure, a timeout, a worker crash, a result
that is not JSON, an end hook that raises, a duplicate delivery, an operator
abort. Each saga runs through the real engine on PostgreSQL, in this process:
``step_execute`` as a worker calls it, ``sweep`` as beat does. When a saga is
parked, an operator retries, skips the failed compensation, or resolves it.

A ledger stands in for the services the steps call: it applies an action's
effect by idempotency key (at most once), and a compensation removes it.

Invariants, checked for every saga:
- a completed saga ran every action exactly once and compensated nothing;
- a compensated saga compensated exactly the compensatable steps whose action
  may have had effects, in reverse order, each once, and left no effect of a
  compensatable step in the ledger;
- a pivot whose effect may have happened never ends compensated;
- an active saga always has a wake-up time, and a parked one says why;
- every failed or timed-out attempt carries its error type and message;
- a duplicate or stale delivery changes nothing.

``SAGAS_GENERATED_CASES`` sets the number of sagas (500 by default).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db.models.functions import Now
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagas import engine, registry
from sagas.definition import (
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
)
from sagas.errors import OperatorActionRefused, PermanentError, TransientError
from sagas.models import Saga, StepAttempt
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
)
from tests.engine_support import expire, make_due

pytestmark = pytest.mark.django_db

CASES = int(os.environ.get("SAGAS_GENERATED_CASES", "500"))

ACTION_FATES = (
    "ok",
    "ok",
    "ok",
    "transient",
    "permanent",
    "partial",
    "timeout",
    "crash",
    "nonjson",
)
COMPENSATION_FATES = ("ok", "ok", "ok", "transient", "bug", "timeout", "crash")


@dataclass
class World:
    """What the services saw, and the fate of each attempt."""

    fates: dict[tuple[str, str, int], str] = field(default_factory=dict)
    # Whether a fate that may or may not have had an effect did.
    effect_landed: dict[tuple[str, str, int], bool] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)  # step names with an effect
    ever_applied: set[str] = field(default_factory=set)
    action_calls: dict[str, int] = field(default_factory=dict)
    compensated: list[str] = field(default_factory=list)
    hook_raises: int = 0
    fixed: bool = False


WORLD = World()


def _apply(step: str) -> None:
    WORLD.applied.add(step)
    WORLD.ever_applied.add(step)


def action(ctx: StepContext) -> dict[str, Any] | list[int]:
    fate = (
        "ok"
        if WORLD.fixed
        else WORLD.fates.get((ctx.step, ctx.kind, ctx.attempt), "ok")
    )
    WORLD.action_calls[ctx.step] = WORLD.action_calls.get(ctx.step, 0) + 1
    if fate == "permanent":
        raise PermanentError("refused")
    landed = WORLD.effect_landed.get((ctx.step, ctx.kind, ctx.attempt), True)
    if fate == "transient":
        if landed:
            _apply(ctx.step)
        raise TransientError("flaked")
    _apply(ctx.step)
    if fate == "partial":
        raise PermanentError("half done", partial=True)
    if fate == "nonjson":
        return [1, 2]
    return {f"{ctx.step}_done": True}


def compensation(ctx: StepContext) -> None:
    fate = (
        "ok"
        if WORLD.fixed
        else WORLD.fates.get((ctx.step, ctx.kind, ctx.attempt), "ok")
    )
    if fate == "transient":
        raise TransientError("flaked")
    if fate == "bug":
        raise RuntimeError("compensation bug")
    WORLD.applied.discard(ctx.step)
    WORLD.compensated.append(ctx.step)


def on_completed(outcome: SagaOutcome) -> None:
    if WORLD.hook_raises > 0 and not WORLD.fixed:
        WORLD.hook_raises -= 1
        raise ValueError("on_completed broke")


@dataclass(frozen=True)
class Shape:
    kinds: tuple[StepKind, ...]
    attempts: tuple[int | None, ...]


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    compensatable = draw(st.integers(0, 5))
    pivot = draw(st.booleans())
    retriable = draw(
        st.integers(0 if compensatable + pivot else 1, 6 - compensatable - pivot)
    )
    kinds = (
        (StepKind.COMPENSATABLE,) * compensatable
        + (StepKind.PIVOT,) * pivot
        + (StepKind.RETRIABLE,) * retriable
    )
    attempts = tuple(
        draw(st.one_of(st.none(), st.integers(2, 3)))
        if kind is StepKind.RETRIABLE
        else draw(st.integers(1, 3))
        for kind in kinds
    )
    return Shape(kinds[:6], attempts[:6])


@dataclass(frozen=True)
class Fate:
    fates: dict[tuple[str, str, int], str]
    landed: dict[tuple[str, str, int], bool]
    duplicate_every: int
    abort_at: int | None
    hook_raises: int
    on_parked: tuple[str, ...]


@st.composite
def fates(draw: st.DrawFn, shape: Shape) -> Fate:
    chosen: dict[tuple[str, str, int], str] = {}
    landed: dict[tuple[str, str, int], bool] = {}
    for index, kind in enumerate(shape.kinds):
        name = f"s{index}"
        for number in range(1, 5):
            chosen[(name, "action", number)] = draw(st.sampled_from(ACTION_FATES))
            landed[(name, "action", number)] = draw(st.booleans())
            if kind is StepKind.COMPENSATABLE:
                chosen[(name, "compensation", number)] = draw(
                    st.sampled_from(COMPENSATION_FATES)
                )
    return Fate(
        fates=chosen,
        landed=landed,
        duplicate_every=draw(st.integers(2, 6)),
        abort_at=draw(st.one_of(st.none(), st.integers(0, 8))),
        hook_raises=draw(st.integers(0, 1)),
        on_parked=tuple(
            draw(st.lists(st.sampled_from(["retry", "skip", "resolve"]), max_size=3))
        ),
    )


_names = itertools.count(1)


def _register(shape: Shape) -> SagaDefinition:
    steps = tuple(
        Step(
            f"s{index}",
            action,  # type: ignore[arg-type]  # returns a list on purpose
            compensation=compensation if kind is StepKind.COMPENSATABLE else None,
            kind=kind,
            timeout=30,
            retry=RetryPolicy(
                max_attempts=shape.attempts[index], backoff=0.01, max_backoff=0.02
            ),
        )
        for index, kind in enumerate(shape.kinds)
    )
    return registry.register(
        SagaDefinition(
            name=f"generated_{next(_names)}", steps=steps, on_completed=on_completed
        )
    )


class Violation(AssertionError):
    pass


def _check_live(saga: Saga) -> None:
    if saga.status in ACTIVE_SAGA_STATUSES and saga.wake_at is None:
        raise Violation(f"active saga without a wake-up: {saga.status}")
    if saga.status == SagaStatus.FAILED and not saga.last_error:
        raise Violation("parked saga without a reason")


def _deliver(
    saga: Saga, attempt: StepAttempt, fate: Fate, counter: Iterator[int]
) -> None:
    """Run the current attempt as the world has it: run, hang, or crash."""
    outcome = WORLD.fates.get((attempt.step, attempt.kind, attempt.number), "ok")
    if WORLD.fixed:
        outcome = "ok"
    if outcome == "timeout":
        # The worker hangs: maybe its effect landed, then the deadline passes.
        if attempt.kind == AttemptKind.ACTION and WORLD.effect_landed.get(
            (attempt.step, attempt.kind, attempt.number), True
        ):
            _apply(attempt.step)
        WORLD.fates[(attempt.step, attempt.kind, attempt.number)] = "spent"
        expire(saga.pk)
        engine.sweep()
        return
    if outcome == "crash":
        # The worker dies mid-step (its transaction rolls back; a remote effect
        # may have landed); the lease lapses and the sweeper sends it again.
        if attempt.kind == AttemptKind.ACTION and WORLD.effect_landed.get(
            (attempt.step, attempt.kind, attempt.number), True
        ):
            _apply(attempt.step)
        WORLD.fates[(attempt.step, attempt.kind, attempt.number)] = "ok"
        Saga.objects.filter(pk=saga.pk).update(wake_at=Now())
        engine.sweep()
        engine.step_execute(saga.pk, attempt.pk, redelivered=True)
        return
    result = engine.step_execute(saga.pk, attempt.pk)
    if next(counter) % fate.duplicate_every == 0:
        again = engine.step_execute(saga.pk, attempt.pk)
        if again != "fenced":
            raise Violation(f"a duplicate delivery ran: {again} after {result}")


def _operate(saga: Saga, choice: str) -> None:
    WORLD.fixed = True
    try:
        if choice == "skip":
            engine.saga_skip_compensation(saga.pk, actor="gen", reason="by hand")
        elif choice == "retry":
            engine.saga_retry(saga.pk, actor="gen", reason="fixed")
        else:
            engine.saga_resolve(saga.pk, actor="gen", reason="done by hand")
    except OperatorActionRefused:
        engine.saga_resolve(saga.pk, actor="gen", reason="done by hand")


def _run(definition: SagaDefinition, fate: Fate) -> Saga:
    saga = engine.saga_start(definition, business_key=f"gen:{uuid.uuid4()}")
    counter = itertools.count(1)
    choices = iter(fate.on_parked)
    for tick in range(400):
        saga = Saga.objects.select_related("current_attempt").get(pk=saga.pk)
        _check_live(saga)
        if saga.status == SagaStatus.FAILED:
            _operate(saga, next(choices, "resolve"))
            continue
        if saga.status not in ACTIVE_SAGA_STATUSES:
            return saga
        attempt = saga.current_attempt
        assert attempt is not None
        if attempt.status == AttemptStatus.SCHEDULED:
            make_due(saga.pk)
            engine.sweep()
            continue
        if tick == fate.abort_at and saga.status == SagaStatus.RUNNING:
            try:
                engine.saga_compensate(saga.pk, actor="gen", reason="abort")
            except OperatorActionRefused:
                pass
            else:
                stale = engine.step_execute(saga.pk, attempt.pk)
                if stale != "fenced":
                    raise Violation(f"a cancelled attempt ran: {stale}")
                continue
        _deliver(saga, attempt, fate, counter)
    raise Violation("saga did not stop")


def _check_end(definition: SagaDefinition, saga: Saga) -> None:
    attempts = list(StepAttempt.objects.filter(saga=saga).order_by("id"))
    for attempt in attempts:
        if attempt.status in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT) and not (
            attempt.error and attempt.error_type
        ):
            raise Violation(f"attempt without its error: {attempt}")
        if attempt.status in (AttemptStatus.SCHEDULED, AttemptStatus.DISPATCHED):
            raise Violation(f"open attempt on a finished saga: {attempt}")
    names = [step.name for step in definition.steps]
    succeeded = [
        a.step
        for a in attempts
        if a.kind == AttemptKind.ACTION and a.status == AttemptStatus.SUCCEEDED
    ]
    undone = [
        a.step
        for a in attempts
        if a.kind == AttemptKind.COMPENSATION and a.status == AttemptStatus.SUCCEEDED
    ]
    if saga.status == SagaStatus.COMPLETED:
        if succeeded != names:
            raise Violation(f"completed but ran {succeeded}, not {names}")
        if undone or WORLD.compensated:
            raise Violation(f"completed but compensated {undone}")
    if saga.status == SagaStatus.COMPENSATED:
        touched = {
            a.step
            for a in attempts
            if a.kind == AttemptKind.ACTION
            and (a.status == AttemptStatus.SUCCEEDED or a.effects_possible)
        }
        skipped = {a.step for a in attempts if a.status == AttemptStatus.SKIPPED}
        expected = [
            step.name
            for step in reversed(definition.steps)
            if step.compensation is not None and step.name in touched - skipped
        ]
        if undone != expected:
            raise Violation(f"compensated {undone}, expected {expected}")
        if WORLD.compensated != undone:
            raise Violation(f"services saw {WORLD.compensated}, engine {undone}")
        compensatable = {s.name for s in definition.steps if s.compensation is not None}
        if WORLD.applied & compensatable - skipped:
            raise Violation(f"effects left behind: {WORLD.applied}")
        pivots = {s.name for s in definition.steps if s.kind is StepKind.PIVOT}
        if WORLD.ever_applied & pivots:
            raise Violation("a pivot that may have happened ended compensated")


@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_sagas_keep_every_invariant(data: st.DataObject) -> None:
    shape = data.draw(shapes(), label="shape")
    fate = data.draw(fates(shape), label="fate")
    WORLD.__init__()  # type: ignore[misc]
    WORLD.fates.update(fate.fates)
    WORLD.effect_landed.update(fate.landed)
    WORLD.hook_raises = fate.hook_raises
    definition = _register(shape)
    try:
        saga = _run(definition, fate)
        _check_end(definition, saga)
    finally:
        registry.unregister(definition.name)
