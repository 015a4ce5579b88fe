"""A saga's step path in this process, without a broker: statements and CPU.

Starts sagas of a workload (the no-op saga or the order saga), then runs each
with ``step_execute(..., continue_inline=True)`` as a worker's task would, so
the figures are what a worker spends per saga apart from the broker.
"""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

from django.db import connections
from django.test.utils import CaptureQueriesContext

from bench.throughput import Workload
from sagas.engine import step_execute
from sagas.models import Saga


@dataclass
class StepProbe:
    workload: str
    sagas: int
    statements_per_saga: int
    transactions_per_saga: int
    cpu_ms_per_saga: float
    wall_ms_per_saga: float
    profile: str


class _Starter:
    """Start sagas of a workload under keys no other batch uses."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.started = 0

    def __call__(self, n: int) -> list[tuple[uuid.UUID, int]]:
        first, self.started = self.started, self.started + n
        keys = [self.workload.start(i) for i in range(first, first + n)]
        rows = Saga.objects.filter(business_key__in=keys).values_list(
            "business_key", "pk", "current_attempt_id"
        )
        started = {key: (pk, attempt) for key, pk, attempt in rows}
        return [started[key] for key in keys]


def _run_all(sagas: list[tuple[uuid.UUID, int]]) -> None:
    for saga_id, attempt_id in sagas:
        step_execute(saga_id, attempt_id, continue_inline=True)


def run(workload: Workload, n: int, label: str) -> StepProbe:
    """Count one saga's statements (every database), then time and profile ``n``."""
    from pyinstrument import Profiler

    if workload.prepare is not None:
        workload.prepare()
    start = _Starter(workload)
    one = start(1)
    with ExitStack() as stack:
        captured = [
            stack.enter_context(CaptureQueriesContext(connections[alias]))
            for alias in connections
        ]
        _run_all(one)
    statements = [query["sql"] for c in captured for query in c.captured_queries]
    sagas = start(n)
    cpu, wall = time.process_time(), time.perf_counter()
    _run_all(sagas)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sagas = start(n)
    profiler = Profiler(interval=0.0005)
    with profiler:
        _run_all(sagas)
    return StepProbe(
        workload=label,
        sagas=n,
        statements_per_saga=len(statements),
        transactions_per_saga=statements.count("COMMIT"),
        cpu_ms_per_saga=cpu * 1000 / n,
        wall_ms_per_saga=wall * 1000 / n,
        profile=profiler.output_text(color=False, short_mode=True),
    )
