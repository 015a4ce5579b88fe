"""Throwaway saga definitions whose steps behave as a plan in the context says.

A saga's context holds ``plan``: ``{"<step>:<kind>": [outcome, ...]}``, one
outcome per attempt (the last one repeats). Outcomes:

- ``ok``: succeed (the action returns ``{"<step>_done": True}``);
- ``transient`` / ``permanent`` / ``partial``: raise the matching error;
- ``runtime``: raise ``RuntimeError`` (a bug);
- ``base``: raise a ``BaseException`` subclass;
- ``datetime`` / ``decimal`` / ``uuid`` / ``nan`` / ``list`` / ``nul``: return
  a result the engine cannot store;
- ``clobber``: return a value for a context key that is already set;
- ``long_type``: raise an exception whose type name is over 200 characters;
- ``nul_error``: raise an error whose message holds a NUL character.

Every call is appended to ``CALLS`` as ``(saga id, step, kind, key)``: the
in-memory stand-in for a remote service's ledger, which a rollback does not undo.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.db.models.functions import Now

from sagas import engine, registry
from sagas.definition import (
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
)
from sagas.errors import PermanentError, TransientError
from sagas.models import Saga, StepAttempt

CALLS: list[tuple[str, str, str, str]] = []
HOOKS: list[tuple[str, str]] = []

FAST = RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.02, jitter=False)


class Interrupt(BaseException):
    """A BaseException that is not KeyboardInterrupt or SystemExit."""


LongName = type("E" * 210, (Exception,), {})


def behave(ctx: StepContext) -> dict[str, Any] | Any:
    """Run the outcome the saga's plan gives this attempt."""
    plan = ctx.data.get("plan", {}).get(f"{ctx.step}:{ctx.kind}", ["ok"])
    outcome = plan[min(ctx.attempt, len(plan)) - 1]
    CALLS.append((str(ctx.saga_id), ctx.step, ctx.kind, ctx.idempotency_key))
    results: dict[str, Callable[[], Any]] = {
        "datetime": lambda: {"at": datetime.datetime.now(datetime.UTC)},
        "decimal": lambda: {"amount": decimal.Decimal("1.10")},
        "uuid": lambda: {"ref": uuid.uuid4()},
        "nan": lambda: {"ratio": float("nan")},
        "list": lambda: [1, 2],
        "nul": lambda: {"text": "a\x00b"},
        "clobber": lambda: {"owner": "someone else"},
    }
    if outcome in results:
        return results[outcome]()
    errors: dict[str, Callable[[], BaseException]] = {
        "transient": lambda: TransientError(f"{ctx.step} flaked"),
        "permanent": lambda: PermanentError(f"{ctx.step} refused"),
        "partial": lambda: PermanentError(f"{ctx.step} half done", partial=True),
        "runtime": lambda: RuntimeError(f"{ctx.step} has a bug"),
        "base": lambda: Interrupt(f"{ctx.step} interrupted"),
        "long_type": lambda: LongName("long"),
        "nul_error": lambda: RuntimeError("bad\x00byte"),
    }
    if outcome in errors:
        raise errors[outcome]()
    assert outcome == "ok", outcome
    return {f"{ctx.step}_done": True} if ctx.kind == "action" else {"ignored": 1}


def hook(name: str) -> Callable[[SagaOutcome], None]:
    """Return a hook that records its call, or raises when the plan says so."""

    def run(outcome: SagaOutcome) -> None:
        if name in outcome.data.get("raise_in", ()):
            raise ValueError(f"{name} hook broke")
        HOOKS.append((str(outcome.saga_id), name))

    return run


_names = itertools.count(1)


def define(
    *kinds: str,
    names: tuple[str, ...] | None = None,
    version: int = 1,
    name: str | None = None,
    retry: RetryPolicy = FAST,
    retired: bool = False,
) -> SagaDefinition:
    """Register a definition with one step per kind: c(ompensatable), p, r."""
    steps = []
    for index, kind in enumerate(kinds):
        step_kind = {
            "c": StepKind.COMPENSATABLE,
            "p": StepKind.PIVOT,
            "r": StepKind.RETRIABLE,
        }[kind]
        steps.append(
            Step(
                names[index] if names else f"step_{index + 1}",
                behave,
                compensation=behave if step_kind is StepKind.COMPENSATABLE else None,
                kind=step_kind,
                timeout=30,
                retry=retry,
            )
        )
    return registry.register(
        SagaDefinition(
            name=name or f"gen_{next(_names)}",
            version=version,
            steps=tuple(steps),
            on_completed=hook("on_completed"),
            on_compensated=hook("on_compensated"),
            on_failed=hook("on_failed"),
            on_resolved=hook("on_resolved"),
            retired=retired,
        )
    )


def start(definition: SagaDefinition | str, **context: Any) -> Saga:
    return engine.saga_start(
        definition, business_key=f"test:{uuid.uuid4()}", context=context
    )


def run_next(saga_id: Any) -> str:
    """Execute the saga's current attempt once, due or not."""
    saga = Saga.objects.select_related("current_attempt").get(pk=saga_id)
    attempt = saga.current_attempt
    assert attempt is not None, f"saga {saga_id} has no current attempt"
    if attempt.status == "scheduled":
        make_due(saga_id)
        engine.sweep()
        attempt.refresh_from_db()
    return engine.step_execute(saga.pk, attempt.pk)


def make_due(saga_id: Any) -> None:
    """Bring the saga's wake-up and its attempt's backoff to now."""
    Saga.objects.filter(pk=saga_id).update(wake_at=Now())
    StepAttempt.objects.filter(saga_id=saga_id).update(not_before=Now())


def expire(saga_id: Any) -> None:
    """Put the current attempt past its deadline, as if its worker hung or died."""
    past = Now() - datetime.timedelta(minutes=5)
    StepAttempt.objects.filter(saga_id=saga_id, status="dispatched").update(
        deadline_at=past
    )
    Saga.objects.filter(pk=saga_id).update(wake_at=past)


def calls(saga_id: Any, kind: str = "action") -> list[str]:
    return [step for sid, step, k, _ in CALLS if sid == str(saga_id) and k == kind]


def attempts(saga_id: Any) -> list[StepAttempt]:
    return list(StepAttempt.objects.filter(saga_id=saga_id).order_by("id"))


def cleanup() -> Iterator[None]:
    """Forget calls and unregister the definitions a test made."""
    before = {(d.name, d.version) for d in registry.definitions()}
    CALLS.clear()
    HOOKS.clear()
    yield
    for definition in registry.definitions():
        if (definition.name, definition.version) not in before:
            registry.unregister(definition.name, definition.version)
