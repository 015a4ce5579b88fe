"""Prometheus metrics: counters fed by the engine's signals, gauges by the sweeper.

Counters and histograms are updated in the process that made a change, from
``sagas.signals`` receivers (after COMMIT). Gauges that describe the whole
database (stuck, parked and active sagas, the oldest active saga's age) are
computed by the sweep task from the database, so they are right whatever the
number of workers.

Prefork workers and gunicorn run several processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory, owned by one service, before
it starts (prometheus-client's multiprocess mode), and every process's values
are summed on ``/metrics``. Labels are bounded: definition, step, kind, outcome
and status, never a saga id or business key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import structlog
from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    Q,
)
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from sagas import conf, registry, signals
from sagas.models import Saga
from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    TERMINAL_SAGA_STATUSES,
    AttemptStatus,
    SagaStatus,
)

log = structlog.get_logger("sagas.metrics")

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Metrics without labels open their file as soon as they are declared.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Steps take milliseconds to minutes; lag is mostly queueing.
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

SAGAS_STARTED = Counter("sagas_started", "Sagas started.", ["definition"])
SAGAS_FINISHED = Counter(
    "sagas_finished",
    "Transitions into a final status: completed, compensated, failed (parked),"
    " resolved. A parked saga that an operator retries or resolves counts again.",
    ["definition", "status"],
)
SAGA_DURATION = Histogram(
    "sagas_saga_duration_seconds",
    "Time from a saga's start to its final status, by the database clock.",
    ["definition", "status"],
    buckets=_SAGA_BUCKETS,
)
SAGAS_COMPENSATING = Counter(
    "sagas_compensations",
    "Sagas that began compensating.",
    ["definition"],
)
SAGAS_PARKED = Counter(
    "sagas_parked",
    "Sagas parked failed for an operator.",
    ["definition"],
)
STEP_ATTEMPTS = Counter(
    "sagas_step_attempts",
    "Step attempts finished, by outcome (succeeded, failed, timed_out, cancelled).",
    ["definition", "step", "kind", "outcome"],
)
STEP_RETRIES = Counter(
    "sagas_step_retries",
    "Retries scheduled after a failed attempt.",
    ["definition", "step", "kind"],
)
STEP_RESENDS = Counter(
    "sagas_step_resends",
    "Step messages re-sent by the sweeper (not finished within the lease).",
    ["definition", "step", "kind"],
)
STEP_DURATION = Histogram(
    "sagas_step_duration_seconds",
    "Time a step's action or compensation ran in a worker.",
    ["definition", "step", "kind", "outcome"],
    buckets=_STEP_BUCKETS,
)
STEP_LAG = Histogram(
    "sagas_step_dispatch_lag_seconds",
    "Time from a step's dispatch (or the end of its backoff) to its start.",
    ["definition", "step", "kind"],
    buckets=_STEP_BUCKETS,
)
SWEEP_DURATION = Histogram(
    "sagas_sweeper_pass_duration_seconds",
    "Duration of one sweep task (every batch of one beat tick).",
    buckets=_STEP_BUCKETS,
)
# The gauges below are set by whichever process swept last ("mostrecent"):
# they are read from the database, not accumulated per process.
SWEEP_LAST_RUN = Gauge(
    "sagas_sweeper_last_run_timestamp_seconds",
    "Unix time the last sweep task finished.",
    multiprocess_mode="mostrecent",
)
STUCK = Gauge(
    "sagas_stuck",
    "Active sagas without progress for SAGAS_STUCK_AFTER seconds.",
    ["definition"],
    multiprocess_mode="mostrecent",
)
PARKED = Gauge(
    "sagas_parked_now",
    "Sagas parked failed, waiting for an operator.",
    ["definition"],
    multiprocess_mode="mostrecent",
)
ACTIVE = Gauge(
    "sagas_active",
    "Sagas pending, running or compensating.",
    ["definition", "status"],
    multiprocess_mode="mostrecent",
)
OLDEST_ACTIVE_AGE = Gauge(
    "sagas_oldest_active_age_seconds",
    "Age of the oldest active saga (0 when none).",
    ["definition"],
    multiprocess_mode="mostrecent",
)

_ATTEMPT_OUTCOMES = frozenset(
    {
        AttemptStatus.SUCCEEDED,
        AttemptStatus.FAILED,
        AttemptStatus.TIMED_OUT,
        AttemptStatus.CANCELLED,
    }
)


# --- receivers ----------------------------------------------------------------


def on_saga_transition(
    *,
    definition: str,
    step: str,
    kind: str,
    attempt: int | None,
    old_status: str,
    new_status: str,
    actor: str,
    detail: str,
    saga_id: str,
    age: float | None = None,
    **_: Any,
) -> None:
    """Count one committed transition (``sagas.signals.saga_transition``)."""
    if not step:
        _saga_transition(saga_id, definition, old_status, new_status, age)
    elif old_status == new_status == AttemptStatus.DISPATCHED:
        if detail.startswith("re-sent"):
            STEP_RESENDS.labels(definition, step, kind).inc()
    elif not old_status:
        if attempt and attempt > 1:
            STEP_RETRIES.labels(definition, step, kind).inc()
    elif new_status in _ATTEMPT_OUTCOMES:
        STEP_ATTEMPTS.labels(definition, step, kind, new_status).inc()


def _saga_transition(
    saga_id: str, definition: str, old: str, new: str, age: float | None
) -> None:
    if old == new:
        return
    if not old:
        SAGAS_STARTED.labels(definition).inc()
    elif new == SagaStatus.COMPENSATING:
        SAGAS_COMPENSATING.labels(definition).inc()
    if new == SagaStatus.FAILED:
        SAGAS_PARKED.labels(definition).inc()
    if new in TERMINAL_SAGA_STATUSES:
        SAGAS_FINISHED.labels(definition, new).inc()
        # The engine's age is taken when the final transaction began.
        if age is None:
            age = _saga_age(saga_id)
        if age is not None:
            SAGA_DURATION.labels(definition, new).observe(age)


def _saga_age(saga_id: str) -> float | None:
    """Return seconds from the saga's creation to now, by the database clock.

    Only for a signal sent without ``age``: one primary-key read per finished
    saga, after its commit (worker clocks are not trusted).
    """
    row = (
        Saga.objects.filter(pk=saga_id)
        .annotate(db_now=Now())
        .values_list("created_at", "db_now")
        .first()
    )
    return None if row is None else max((row[1] - row[0]).total_seconds(), 0.0)


def on_step_ran(
    *,
    definition: str,
    step: str,
    kind: str,
    outcome: str,
    duration: float,
    lag: float | None,
    **_: Any,
) -> None:
    """Time one executed step (``sagas.signals.step_ran``)."""
    STEP_DURATION.labels(definition, step, kind, outcome).observe(duration)
    if lag is not None:
        # Worker and database clocks may differ by a little: never negative.
        STEP_LAG.labels(definition, step, kind).observe(max(lag, 0.0))


def connect() -> None:
    """Connect the receivers (``SagasConfig.ready``)."""
    signals.saga_transition.connect(on_saga_transition, dispatch_uid="sagas.metrics")
    signals.step_ran.connect(on_step_ran, dispatch_uid="sagas.metrics")


# --- gauges from the database -------------------------------------------------


@contextmanager
def sweep_pass() -> Iterator[None]:
    """Time a sweep task, then refresh the database gauges and the last-run time."""
    began = time.monotonic()
    try:
        yield
    finally:
        SWEEP_DURATION.observe(time.monotonic() - began)
        try:
            refresh_gauges()
        except Exception:
            # A gauge query must never fail the sweep itself.
            log.warning("metrics.gauges_failed", exc_info=True)
        SWEEP_LAST_RUN.set(time.time())


def refresh_gauges() -> None:
    """Set the stuck, parked, active and oldest-active gauges from the database."""
    stuck_after = conf.get("SAGAS_STUCK_AFTER")
    definitions = set(registry.names())
    stuck_before = ExpressionWrapper(
        Now() - timedelta(seconds=stuck_after), output_field=DateTimeField()
    )
    age = ExpressionWrapper(Now() - F("created_at"), output_field=DurationField())
    active_rows = list(
        Saga.objects.filter(status__in=ACTIVE_SAGA_STATUSES)
        .values("definition", "status")
        .annotate(
            n=Count("id"),
            stuck=Count("id", filter=Q(updated_at__lt=stuck_before)),
            oldest=Max(age),
        )
        .order_by()
    )
    parked_rows = dict(
        Saga.objects.filter(status=SagaStatus.FAILED)
        .values("definition")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("definition", "n")
    )
    definitions |= {row["definition"] for row in active_rows} | set(parked_rows)
    stuck = dict.fromkeys(definitions, 0)
    oldest = dict.fromkeys(definitions, 0.0)
    active = {(d, s): 0 for d in definitions for s in ACTIVE_SAGA_STATUSES}
    for row in active_rows:
        name = row["definition"]
        stuck[name] += row["stuck"]
        active[name, row["status"]] = row["n"]
        oldest[name] = max(oldest[name], row["oldest"].total_seconds())
    for name in definitions:
        STUCK.labels(name).set(stuck[name])
        PARKED.labels(name).set(parked_rows.get(name, 0))
        OLDEST_ACTIVE_AGE.labels(name).set(oldest[name])
    for (name, status), count in active.items():
        ACTIVE.labels(name, status).set(count)


# --- exposition ---------------------------------------------------------------


def collector_registry() -> CollectorRegistry:
    """Return the registry to expose: every process's values in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    return collected


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the metrics in Prometheus' text format."""
    return HttpResponse(
        generate_latest(collector_registry()), content_type=CONTENT_TYPE_LATEST
    )


def wipe_multiprocess_dir() -> None:
    """Empty the multiprocess directory when a service (re)starts.

    Files left by a previous run would be summed with the new ones; call it
    from the service's first process only (gunicorn ``on_starting``, Celery
    ``worker_init``): one directory per service.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (gunicorn ``child_exit``, Celery)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def start_worker_server() -> int | None:
    """Serve ``/metrics`` from a worker's main process if a port is configured.

    ``SAGAS_WORKER_METRICS_PORT`` (off when unset or 0); the address is
    ``SAGAS_WORKER_METRICS_ADDR`` (default all interfaces).
    """
    from prometheus_client import start_http_server

    port = int(os.environ.get("SAGAS_WORKER_METRICS_PORT") or 0)
    if not port:
        return None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Without it each pool process counts alone and this server sees none.
        log.warning("metrics.no_multiproc_dir", port=port)
    addr = os.environ.get("SAGAS_WORKER_METRICS_ADDR", "0.0.0.0")
    start_http_server(port, addr=addr, registry=collector_registry())
    log.info("metrics.serving", port=port, addr=addr)
    return port
