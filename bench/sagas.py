"""The engine's benchmark saga: three no-op steps, each with a no-op compensation.

Workers import it through ``SAGAS_DEFINITION_MODULES=bench.sagas``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from bench.tasks import report_done
from sagas.definition import SagaDefinition, SagaOutcome, Step, StepContext
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
