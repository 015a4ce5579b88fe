"""Declaring a saga: plain frozen dataclasses, no database, no Celery.

A saga reads top to bottom::

    checkout = SagaDefinition(
        name="checkout",
        version=1,
        steps=(
            Step("reserve_stock", reserve, compensation=release),
            Step("charge_payment", charge, compensation=refund, timeout=20),
            Step("send_receipt", send_receipt, kind=StepKind.RETRIABLE),
        ),
    )
"""

from __future__ import annotations

import enum
import random
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sagas.errors import DefinitionError, TransientError
from sagas.idempotency import ACTION, make_key

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class StepKind(enum.StrEnum):
    """The classic saga taxonomy."""

    # Has a compensation that semantically undoes it.
    COMPENSATABLE = "compensatable"
    # The point of no return: cannot be undone, so nothing after it may fail for good.
    PIVOT = "pivot"
    # After the pivot: retried until it succeeds, never compensated.
    RETRIABLE = "retriable"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failing step.

    ``max_attempts=None`` retries forever (only for retriable steps). Errors that
    are instances of ``retry_on`` are transient; any other exception is permanent.
    """

    max_attempts: int | None = 3
    backoff: float = 0.5
    multiplier: float = 2.0
    max_backoff: float = 300.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (
        TransientError,
        ConnectionError,
        TimeoutError,
    )

    def is_transient(self, exc: BaseException) -> bool:
        """Return True if ``exc`` is worth another attempt."""
        return isinstance(exc, self.retry_on)

    def allows(self, attempt: int) -> bool:
        """Return True if attempt number ``attempt`` may run after a failure."""
        return self.max_attempts is None or attempt <= self.max_attempts

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait before attempt number ``attempt`` (>= 2)."""
        base = min(
            self.backoff * self.multiplier ** max(attempt - 2, 0), self.max_backoff
        )
        # "Equal jitter": keeps at least half the backoff so retries stay spaced,
        # randomises the rest so a burst of failures does not retry in lockstep.
        return base / 2 + random.uniform(0, base / 2) if self.jitter else base


@dataclass(frozen=True)
class StepContext:
    """What a step's action or compensation receives."""

    saga_id: UUID
    business_key: str
    step: str
    kind: str  # "action" or "compensation"
    attempt: int
    data: Mapping[str, Any]

    @property
    def idempotency_key(self) -> str:
        """Return the key the step passes to the services it calls."""
        return make_key(self.saga_id, self.step, self.kind)

    @property
    def action_key(self) -> str:
        """Return the key the step's action used: a compensation undoes by it."""
        return make_key(self.saga_id, self.step, ACTION)


StepFunction = Callable[[StepContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Remote:
    """A step action or compensation run by a participant in another service.

    The engine sends a command, the Celery task ``task`` on ``queue``, once the
    step's transaction commits, then waits for the participant's reply, holding
    no worker, lock or transaction; the step's timeout runs from the database
    clock. The command's keyword arguments: ``saga_id``, ``attempt_id``,
    ``step``, ``kind``, ``attempt``, ``idempotency_key``, ``action_key``,
    ``reply_task`` and ``data`` (``payload(ctx)``, by default the whole
    context). The participant answers with ``reply_task`` (``sagas.step_reply``)
    or over HTTP (``POST /api/participants/replies/``), also after a compensation that
    found nothing to undo.
    """

    task: str
    queue: str | None = None
    payload: Callable[[StepContext], Mapping[str, Any]] | None = None

    def __call__(self, ctx: StepContext) -> Mapping[str, Any] | None:
        raise TypeError(f"remote step {ctx.step} is run by a participant")

    def command(
        self, ctx: StepContext, *, attempt_id: int, reply_task: str
    ) -> dict[str, Any]:
        """Return the command's keyword arguments."""
        return {
            "saga_id": str(ctx.saga_id),
            "attempt_id": attempt_id,
            "step": ctx.step,
            "kind": ctx.kind,
            "attempt": ctx.attempt,
            "idempotency_key": ctx.idempotency_key,
            "action_key": ctx.action_key,
            "reply_task": reply_task,
            "data": dict(self.payload(ctx) if self.payload else ctx.data),
        }


class WaitTimeout(enum.StrEnum):
    """What a wait step does when nothing completes it in time."""

    # Fail the step: the saga compensates the steps before it.
    COMPENSATE = "compensate"
    # Park the saga for an operator.
    ESCALATE = "escalate"


@dataclass(frozen=True)
class Wait:
    """A step action the outside world completes: an event, or a person.

    The saga pauses, holding no worker, until ``sagas.engine.saga_signal``
    delivers ``event`` (with an optional result) or, for ``approval=True``, an
    operator approves or rejects it from the admin. Past the step's timeout it
    compensates or escalates, as ``on_timeout`` says. A wait step changes
    nothing by itself, so it needs no compensation.
    """

    event: str = ""
    approval: bool = False
    on_timeout: WaitTimeout = WaitTimeout.COMPENSATE

    def __call__(self, ctx: StepContext) -> Mapping[str, Any] | None:
        raise TypeError(f"wait step {ctx.step} is completed from outside")


@dataclass(frozen=True)
class Step:
    """One step: an action, its compensation, its timeout and retry policy."""

    name: str
    action: StepFunction
    compensation: StepFunction | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class SagaOutcome:
    """What a definition's completion hooks receive."""

    saga_id: UUID
    business_key: str
    data: Mapping[str, Any]
    failed_step: str = ""
    error: str = ""
    # The status the saga is reaching: completed, compensated, failed, resolved.
    status: str = ""
    # True when the saga had started undoing its steps (failed or resolved while
    # compensating): what it did is being, or has been, given back.
    compensating: bool = False
    # The operator's note, for ``on_resolved``.
    note: str = ""


OutcomeHook = Callable[[SagaOutcome], None]


@dataclass(frozen=True)
class SagaDefinition:
    """An ordered list of steps and hooks run when the saga ends.

    Hooks run inside the engine's transaction that records the end, so business
    rows (an order's status) change atomically with the saga's: ``on_completed``,
    ``on_compensated``, ``on_failed`` (parked for an operator) and ``on_resolved``
    (closed by an operator).

    A saga keeps the ``version`` it started with. To change the steps, register
    the changed definition under a new version and keep the old one, with
    ``retired=True``, until no saga runs it (see the README).
    """

    name: str
    steps: tuple[Step, ...]
    version: int = 1
    on_completed: OutcomeHook | None = None
    on_compensated: OutcomeHook | None = None
    on_failed: OutcomeHook | None = None
    on_resolved: OutcomeHook | None = None
    # Kept for sagas still running it; new sagas start on a newer version.
    retired: bool = False
    # Context keys holding secrets: redacted for readers, scrubbed once finished.
    sensitive: tuple[str, ...] = ()

    def step(self, index: int) -> Step:
        """Return the step at ``index``."""
        return self.steps[index]

    def index_of(self, name: str) -> int | None:
        """Return the position of the step called ``name``, or None.

        Deprecated: look the name up in ``[step.name for step in self.steps]``.
        """
        warnings.warn(
            "SagaDefinition.index_of() is deprecated and will be removed; look "
            "the name up in [step.name for step in definition.steps] instead",
            DeprecationWarning,
            stacklevel=2,
        )
        for index, step in enumerate(self.steps):
            if step.name == name:
                return index
        return None

    @property
    def label(self) -> str:
        """Return ``name vN``, how messages name a definition."""
        return f"{self.name} v{self.version}"

    def validate(self) -> None:
        """Raise DefinitionError if the definition cannot run safely."""
        errors = list(_problems(self))
        if errors:
            raise DefinitionError(f"saga {self.name!r}: " + "; ".join(errors))


def _problems(definition: SagaDefinition) -> list[str]:
    problems: list[str] = []
    if not _NAME.match(definition.name):
        problems.append("name must be snake_case")
    if definition.version < 1:
        problems.append("version must be >= 1")
    if not definition.steps:
        problems.append("a saga needs at least one step")
    seen: set[str] = set()
    pivot_seen = retriable_seen = False
    for step in definition.steps:
        label = f"step {step.name!r}"
        if not _NAME.match(step.name):
            problems.append(f"{label}: name must be snake_case")
        if step.name in seen:
            problems.append(f"{label}: duplicate step name")
        seen.add(step.name)
        if step.timeout <= 0:
            problems.append(f"{label}: timeout must be positive")
        if step.retry.max_attempts is not None and step.retry.max_attempts < 1:
            problems.append(f"{label}: max_attempts must be >= 1 or None")
        if isinstance(step.compensation, Wait):
            problems.append(f"{label}: a compensation cannot wait")
        if step.kind is StepKind.COMPENSATABLE:
            if step.compensation is None and not isinstance(step.action, Wait):
                problems.append(f"{label}: a compensatable step needs a compensation")
            if pivot_seen or retriable_seen:
                problems.append(f"{label}: a compensatable step after the pivot")
            if step.retry.max_attempts is None:
                problems.append(f"{label}: only retriable steps may retry forever")
        elif step.kind is StepKind.PIVOT:
            if step.compensation is not None:
                problems.append(f"{label}: a pivot cannot have a compensation")
            if pivot_seen:
                problems.append(f"{label}: a saga has at most one pivot")
            if retriable_seen:
                problems.append(f"{label}: a pivot after a retriable step")
            if step.retry.max_attempts is None:
                problems.append(f"{label}: only retriable steps may retry forever")
            pivot_seen = True
        else:
            if step.compensation is not None:
                problems.append(f"{label}: a retriable step is never compensated")
            retriable_seen = True
    return problems
