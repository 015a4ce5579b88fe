"""The engine's benchmark sagas: three no-op steps, each with a no-op compensation,
and a tracer that is in flight (waiting for a retry) when a burst arrives.

Workers import it through ``SAGAS_DEFINITION_MODULES=bench.sagas``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from bench.tasks import report_done
from sagas.definition import (
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
)
from sagas.errors import TransientError
from sagas.registry import register


def do_nothing(ctx: StepContext) -> Mapping[str, Any] | None:
    """Succeed at once without touching anything."""
    return None


def _completed(outcome: SagaOutcome) -> None:
    # Reported after commit, like the baseline's last task: the harness waits on
    # the list instead of polling the database; latency comes from finished_at.
    key = outcome.business_key
    transaction.on_commit(lambda: report_done(key, time.time()))


BENCH_SAGA = register(
    SagaDefinition(
        name="bench_noop",
        steps=(
            Step("do_first", do_nothing, compensation=do_nothing),
            Step("do_second", do_nothing, compensation=do_nothing),
            Step("do_third", do_nothing, compensation=do_nothing),
        ),
        on_completed=_completed,
    )
)


# Seconds the tracer's first step waits before its retry (the harness sets it
# so that the retry falls due while a burst is being drained).
TRACER_BACKOFF = float(os.environ.get("BENCH_TRACER_BACKOFF", "1.0"))


def fail_once(ctx: StepContext) -> Mapping[str, Any] | None:
    """Fail the first attempt as a flaky call would; succeed on the retry."""
    if ctx.attempt == 1:
        raise TransientError("first attempt flakes")
    return None


TRACER_SAGA = register(
    SagaDefinition(
        name="bench_tracer",
        steps=(
            Step(
                "flaky_first",
                fail_once,
                compensation=do_nothing,
                retry=RetryPolicy(backoff=TRACER_BACKOFF, multiplier=1, jitter=False),
            ),
            Step("do_second", do_nothing, compensation=do_nothing),
            Step("do_third", do_nothing, compensation=do_nothing),
        ),
        on_completed=_completed,
    )
)
