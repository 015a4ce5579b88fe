"""The engine's queries with a million finished sagas in the table.

The rows are written with bulk SQL (``INSERT ... SELECT generate_series``), not
through the engine: a million sagas through a worker would take most of an hour.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, QuerySet
from django.db.models.functions import Now

from bench.sagas import BENCH_SAGA
from sagas import metrics
from sagas.engine import saga_start, sweep
from sagas.models import Saga
from sagas.states import ACTIVE_SAGA_STATUSES

# Finished sagas spread over 30 days, oldest first, as a live table grows.
FINISHED_SQL = """
INSERT INTO sagas_saga (
    id, definition, version, business_key, status, context, current_step,
    wake_at, failed_step, error, last_error, created_at, updated_at, finished_at,
    trace_context
)
SELECT
    gen_random_uuid(),
    CASE WHEN i %% 5 = 0 THEN 'order_checkout' ELSE 'bench_noop' END,
    1,
    'scale:done:' || i,
    CASE
        WHEN i %% 200 = 0 THEN 'failed'
        WHEN i %% 200 = 1 THEN 'resolved'
        WHEN i %% 50 = 2 THEN 'compensated'
        ELSE 'completed'
    END,
    jsonb_build_object(
        'order_id', i, 'amount_cents', 1999,
        'items', jsonb_build_array(jsonb_build_array('WIDGET-1', 1))
    ),
    2,
    NULL,
    CASE WHEN i %% 200 = 0 THEN 'do_second' ELSE '' END,
    CASE WHEN i %% 200 = 0 THEN 'Payment declined: card declined' ELSE '' END,
    CASE WHEN i %% 200 = 0 THEN 'do_first compensation: unavailable' ELSE '' END,
    now() - i * (interval '30 days' / %(finished)s),
    now() - i * (interval '30 days' / %(finished)s) + interval '1 second',
    CASE WHEN i %% 200 = 0 THEN NULL
        ELSE now() - i * (interval '30 days' / %(finished)s) + interval '1 second'
    END,
    '{}'::jsonb
FROM generate_series(%(finished)s, 1, -1) AS i
"""

# The three attempts of each finished saga, only when asked for (it triples the
# generation time and changes none of the queries measured).
FINISHED_ATTEMPTS_SQL = """
INSERT INTO sagas_stepattempt (
    saga_id, step, step_index, kind, number, try_number, status, effects_possible,
    deliveries, dispatches, created_at, dispatched_at, started_at, finished_at,
    deadline_at, error_type, error, result
)
SELECT s.id, (ARRAY['do_first', 'do_second', 'do_third'])[n + 1], n, 'action', 1,
    1, 'succeeded', false, 0, 1, s.created_at, s.created_at, s.created_at, s.updated_at,
    s.created_at + interval '60 seconds', '', '', NULL
FROM sagas_saga s CROSS JOIN generate_series(0, 2) AS n
WHERE s.business_key LIKE 'scale:done:%%'
"""

# Active sagas: most wait for a step in flight (wake_at in the future); the
# first ``due`` are the sweeper's work: a backoff over (40%%), a lease expired
# (40%%), a deadline passed (20%%).
ACTIVE_SQL = """
WITH created AS (
    INSERT INTO sagas_saga (
        id, definition, version, business_key, status, context, current_step,
        wake_at, failed_step, error, last_error, created_at, updated_at, finished_at,
        trace_context
    )
    SELECT
        gen_random_uuid(), 'bench_noop', 1, 'scale:active:' || i,
        CASE WHEN i %% 3 = 0 AND i %% 2 = 0 THEN 'pending' ELSE 'running' END,
        '{}'::jsonb,
        i %% 3,
        CASE
            WHEN i <= %(due)s * 4 / 10 THEN now() - interval '1 second'
            WHEN i <= %(due)s * 8 / 10 THEN now() - interval '10 seconds'
            WHEN i <= %(due)s THEN now() - interval '30 seconds'
            ELSE now() + (10 + i %% 20) * interval '1 second'
        END,
        '', '', '',
        now() - (i %% 600) * interval '1 second',
        now() - (i %% 20) * interval '1 second',
        NULL,
        '{}'::jsonb
    FROM generate_series(1, %(active)s) AS i
    RETURNING id, business_key, current_step
)
INSERT INTO sagas_stepattempt (
    saga_id, step, step_index, kind, number, try_number, status, effects_possible,
    deliveries, dispatches, created_at, not_before, dispatched_at, deadline_at,
    error_type, error, result
)
SELECT
    c.id, (ARRAY['do_first', 'do_second', 'do_third'])[c.current_step + 1],
    c.current_step, 'action',
    CASE WHEN a.i <= %(due)s * 4 / 10 THEN 2 ELSE 1 END,
    CASE WHEN a.i <= %(due)s * 4 / 10 THEN 2 ELSE 1 END,
    CASE WHEN a.i <= %(due)s * 4 / 10 THEN 'scheduled' ELSE 'dispatched' END,
    false,
    0,
    CASE WHEN a.i <= %(due)s * 4 / 10 THEN 0 ELSE 1 END,
    now() - interval '90 seconds',
    CASE WHEN a.i <= %(due)s * 4 / 10 THEN now() - interval '1 second' END,
    CASE
        WHEN a.i <= %(due)s * 4 / 10 THEN NULL
        WHEN a.i <= %(due)s * 8 / 10 THEN now() - interval '40 seconds'
        WHEN a.i <= %(due)s THEN now() - interval '90 seconds'
        ELSE now() - (a.i %% 20) * interval '1 second'
    END,
    CASE
        WHEN a.i <= %(due)s * 4 / 10 THEN NULL
        WHEN a.i <= %(due)s * 8 / 10 THEN now() + interval '20 seconds'
        WHEN a.i <= %(due)s THEN now() - interval '30 seconds'
        ELSE now() + (60 - a.i %% 20) * interval '1 second'
    END,
    '', '', NULL
FROM created c
CROSS JOIN LATERAL (SELECT split_part(c.business_key, ':', 3)::int AS i) AS a
"""

LAPSE_SQL = """
UPDATE sagas_saga SET wake_at = now() - interval '1 second'
WHERE id IN (
    SELECT id FROM sagas_saga
    WHERE status IN ('pending', 'running', 'compensating') AND wake_at > now()
    ORDER BY wake_at LIMIT %(due)s
)
"""

LINK_ATTEMPTS_SQL = """
UPDATE sagas_saga s SET current_attempt_id = a.id
FROM sagas_stepattempt a
WHERE a.saga_id = s.id AND s.status IN ('pending', 'running', 'compensating')
"""


@dataclass
class Explained:
    """One query's EXPLAIN ANALYZE."""

    label: str
    execution_ms: float
    planning_ms: float
    plan: str


@dataclass
class ScaleResult:
    finished: int
    active: int
    due: int
    starts: int
    generate_s: float
    sweep_due_ms: float = 0.0
    sweep_due_handled: int = 0
    sweep_idle_ms: float = 0.0
    # The first pass also opens the broker connection and compiles queries.
    sweep_cold_ms: float = 0.0
    # The metrics gauges a sweep task reads from the database after its passes.
    gauges_ms: float = 0.0
    start_p50_ms: float = 0.0
    start_p95_ms: float = 0.0
    # pyinstrument's text output for one more warm pass, when asked for.
    sweep_profile: str = ""
    explained: list[Explained] = field(default_factory=list)


def run(
    *,
    finished: int,
    active: int,
    due: int,
    starts: int,
    finished_attempts: bool,
    profile: bool = False,
) -> ScaleResult:
    """Fill the tables, then time a sweeper pass, the changelist and saga_start."""
    began = time.monotonic()
    _generate(finished=finished, active=active, due=due, attempts=finished_attempts)
    result = ScaleResult(
        finished=finished,
        active=active,
        due=due,
        starts=starts,
        generate_s=time.monotonic() - began,
    )
    result.explained.append(_explain_sweep())
    result.explained.extend(_explain_changelist())
    began = time.perf_counter()
    result.sweep_due_handled = sweep()
    result.sweep_cold_ms = (time.perf_counter() - began) * 1000
    # A beat-driven sweeper runs in a long-lived worker: time warm passes over
    # another ``due`` sagas whose lease lapsed (median of 7: a shared machine
    # slows single passes down).
    warm = []
    for _ in range(7):
        with connection.cursor() as cursor:
            cursor.execute(LAPSE_SQL, {"due": due})
        began = time.perf_counter()
        sweep()
        warm.append((time.perf_counter() - began) * 1000)
    result.sweep_due_ms = statistics.median(warm)
    if profile:
        result.sweep_profile = _profile_sweep(due)
    idle = []
    for _ in range(5):
        began = time.perf_counter()
        sweep()
        idle.append((time.perf_counter() - began) * 1000)
    result.sweep_idle_ms = statistics.median(idle)
    gauges = []
    for _ in range(5):
        began = time.perf_counter()
        metrics.refresh_gauges()
        gauges.append((time.perf_counter() - began) * 1000)
    result.gauges_ms = statistics.median(gauges)
    timings = []
    for i in range(starts):
        began = time.perf_counter()
        with transaction.atomic():
            saga_start(BENCH_SAGA, business_key=f"scale:start:{i}")
        timings.append((time.perf_counter() - began) * 1000)
    result.start_p50_ms = statistics.median(timings)
    result.start_p95_ms = statistics.quantiles(timings, n=20)[-1]
    return result


def _profile_sweep(due: int) -> str:
    """Return where one more warm pass over ``due`` lapsed sagas spends its time."""
    from pyinstrument import Profiler

    with connection.cursor() as cursor:
        cursor.execute(LAPSE_SQL, {"due": due})
    profiler = Profiler(interval=0.0002)
    with profiler:
        sweep()
    return profiler.output_text(color=False, short_mode=True)


def _generate(*, finished: int, active: int, due: int, attempts: bool) -> None:
    params = {"finished": finished, "active": active, "due": due}
    with connection.cursor() as cursor:
        cursor.execute(FINISHED_SQL, params)
        if attempts:
            cursor.execute(FINISHED_ATTEMPTS_SQL, params)
        cursor.execute(ACTIVE_SQL, params)
        cursor.execute(LINK_ATTEMPTS_SQL)
        # As autovacuum would have done on a table grown over weeks: fresh
        # planner statistics and a visibility map for index-only scans.
        cursor.execute("VACUUM ANALYZE sagas_saga, sagas_stepattempt")


def _explain_sweep() -> Explained:
    """Explain the sweeper's claim query (rolled back: it takes row locks)."""
    queryset = (
        Saga.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("current_attempt")
        .filter(status__in=ACTIVE_SAGA_STATUSES, wake_at__lte=Now())
        .order_by("wake_at")[:200]
    )
    with transaction.atomic():
        explained = _explain("sweeper claim query (batch of 200)", *_sql(queryset))
        transaction.set_rollback(True)
    return explained


def _explain_changelist() -> list[Explained]:
    """Explain the admin changelist's queries: the page, the counts, the filter."""
    page = Saga.objects.order_by("-created_at")
    queries = [
        ("changelist page (100 newest)", *_sql(page[:100])),
        (
            "changelist page, status=failed",
            *_sql(page.filter(status="failed")[:100]),
        ),
        (
            "changelist page, status=running",
            *_sql(page.filter(status="running")[:100]),
        ),
        ("paginator count (all)", 'SELECT COUNT(*) AS "__count" FROM "sagas_saga"', ()),
        (
            "paginator count, status=failed",
            'SELECT COUNT(*) AS "__count" FROM "sagas_saga"'
            ' WHERE "sagas_saga"."status" = %s',
            ("failed",),
        ),
        (
            "per-status counts (GROUP BY)",
            *_sql(Saga.objects.order_by().values("status").annotate(n=Count("id"))),
        ),
    ]
    results = []
    for label, sql, params in queries:
        _explain(label, sql, params)  # the second run sees a warm cache
        results.append(_explain(label, sql, params))
    return results


def _sql(queryset: QuerySet[Any, Any]) -> tuple[str, tuple[Any, ...]]:
    sql, params = queryset.query.sql_with_params()
    return sql, tuple(params)


_TIME = re.compile(r"^(Planning|Execution) Time: ([\d.]+) ms$", re.MULTILINE)


def _explain(label: str, sql: str, params: tuple[Any, ...]) -> Explained:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    times = {kind: float(ms) for kind, ms in _TIME.findall(plan)}
    return Explained(
        label=label,
        execution_ms=times.get("Execution", float("nan")),
        planning_ms=times.get("Planning", float("nan")),
        plan=plan,
    )
