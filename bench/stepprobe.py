"""The engine's step path in this process, without a broker: statements and CPU.

Starts no-op sagas, then runs each with ``step_execute(..., continue_inline=True)``
as a worker's task would, so the figures are the engine's own cost per step.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from bench.sagas import BENCH_SAGA
from sagas.engine import saga_start, step_execute


@dataclass
class StepProbe:
    sagas: int
    statements_per_saga: int
    transactions_per_saga: int
    cpu_ms_per_saga: float
    wall_ms_per_saga: float
    profile: str


def _start(n: int) -> list[tuple[uuid.UUID, int]]:
    started = []
    for _ in range(n):
        with transaction.atomic():
            saga = saga_start(BENCH_SAGA, business_key=f"probe:{uuid.uuid4()}")
        assert saga.current_attempt_id is not None
        started.append((saga.pk, saga.current_attempt_id))
    return started


def run(n: int) -> StepProbe:
    """Count one saga's statements, then time and profile ``n`` more."""
    from pyinstrument import Profiler

    [(saga_id, attempt_id)] = _start(1)
    with CaptureQueriesContext(connection) as captured:
        step_execute(saga_id, attempt_id, continue_inline=True)
    statements = [query["sql"] for query in captured.captured_queries]
    sagas = _start(n)
    cpu, wall = time.process_time(), time.perf_counter()
    for saga_id, attempt_id in sagas:
        step_execute(saga_id, attempt_id, continue_inline=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sagas = _start(n)
    profiler = Profiler(interval=0.0005)
    with profiler:
        for saga_id, attempt_id in sagas:
            step_execute(saga_id, attempt_id, continue_inline=True)
    return StepProbe(
        sagas=n,
        statements_per_saga=len(statements),
        transactions_per_saga=statements.count("COMMIT"),
        cpu_ms_per_saga=cpu * 1000 / n,
        wall_ms_per_saga=wall * 1000 / n,
        profile=profiler.output_text(color=False, short_mode=True),
    )
