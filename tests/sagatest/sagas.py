"""A four-step test saga whose failures are chosen per saga through its context.

Context keys:
- ``fail``: ``{step: "permanent" | "partial"}`` fails that step's action for good;
- ``sleep``: ``{step: seconds}`` sleeps in that step's action;
- ``crash``: ``{step: True}`` kills the worker process running that step's action.
Transient failure budgets live in ``Fault`` rows (see ``transient_faults``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from django.db import transaction
from django.db.models import F

from config.routers import SANDBOX_ALIAS
from sagas.definition import (
    Remote,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
)
from sagas.errors import PermanentError, TransientError
from sagas.registry import register
from tests.sagatest.models import Effect, Fault

STEPS = ("step_one", "step_two", "step_three", "step_four")


def _consume_fault(ctx: StepContext) -> bool:
    with transaction.atomic(using=SANDBOX_ALIAS):
        fault = (
            Fault.objects.select_for_update()
            .filter(saga_id=ctx.saga_id, step=ctx.step, kind=ctx.kind)
            .exclude(remaining=0)
            .first()
        )
        if fault is None:
            return False
        Fault.objects.filter(pk=fault.pk).update(
            remaining=F("remaining") - (1 if fault.remaining > 0 else 0),
            calls=F("calls") + 1,
        )
    return True


def _run(ctx: StepContext) -> dict[str, Any]:
    data = ctx.data
    if ctx.kind == "action":
        if data.get("crash", {}).get(ctx.step):
            os.kill(os.getpid(), signal.SIGKILL)
        seconds = data.get("sleep", {}).get(ctx.step)
        if seconds:
            time.sleep(seconds)
        mode = data.get("fail", {}).get(ctx.step)
        Effect.objects.create(saga_id=ctx.saga_id, step=ctx.step, kind=ctx.kind)
        if mode == "permanent":
            raise PermanentError(f"{ctx.step} refused")
        if mode == "partial":
            raise PermanentError(f"{ctx.step} half done", partial=True)
    else:
        Effect.objects.create(saga_id=ctx.saga_id, step=ctx.step, kind=ctx.kind)
    if _consume_fault(ctx):
        raise TransientError(f"{ctx.step} {ctx.kind} flaked")
    return {f"{ctx.step}_done": True} if ctx.kind == "action" else {}


TEST_SAGA = register(
    SagaDefinition(
        name="test_four_steps",
        version=1,
        steps=tuple(
            Step(
                name,
                _run,
                compensation=_run,
                timeout=20,
                retry=RetryPolicy(max_attempts=3, backoff=0.05, max_backoff=0.2),
            )
            for name in STEPS
        ),
    )
)

# Two steps with a short deadline and one retry, for timeout tests.
TIMEOUT_SAGA = register(
    SagaDefinition(
        name="test_timeouts",
        version=1,
        steps=tuple(
            Step(
                name,
                _run,
                compensation=_run,
                timeout=1.5,
                retry=RetryPolicy(max_attempts=2, backoff=0.05, max_backoff=0.1),
            )
            for name in ("step_one", "step_two")
        ),
    )
)

# A remote step whose participant never answers (nothing consumes its queue).
_SILENT = Remote("nobody.listens", queue="nobody")
_ONCE = RetryPolicy(max_attempts=1)

SILENT_REMOTE_SAGA = register(
    SagaDefinition(
        name="test_silent_remote",
        steps=(
            Step("step_one", _run, compensation=_run, timeout=20, retry=_ONCE),
            Step("step_two", _SILENT, compensation=_run, timeout=2, retry=_ONCE),
        ),
    )
)

SILENT_REMOTE_PIVOT_SAGA = register(
    SagaDefinition(
        name="test_silent_remote_pivot",
        steps=(
            Step("step_one", _run, compensation=_run, timeout=20, retry=_ONCE),
            Step("step_two", _SILENT, kind=StepKind.PIVOT, timeout=2, retry=_ONCE),
        ),
    )
)
