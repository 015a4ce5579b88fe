"""Throughput, latency and cost of sagas run by a real worker, serial and in bursts.

Each (workload, mode) pair gets a freshly truncated database, an empty Redis and
its own worker, so that CPU, memory and database counters belong to it alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from celery import Celery
from django.apps import apps
from django.core.management import call_command
from django.db import connection, connections, transaction

from bench.probes import (
    DbCounters,
    DbStats,
    TreeUsage,
    machine_busy,
    process_cpu,
    tree_usage,
)
from bench.sagas import BENCH_SAGA
from bench.tasks import DONE_LIST, raw_chain
from bench.worker import Worker
from sagas.definition import SagaDefinition
from sagas.engine import saga_start
from sagas.models import Saga, StepAttempt
from sagas.states import TERMINAL_SAGA_STATUSES

# Tables the benchmark may fill: emptied before each phase.
BENCH_APPS = ("sagas", "orders", "inventory", "payments", "shipping")
WAIT_LIMIT = 600.0
ORDER_POLL = 0.25


@dataclass
class Run:
    """What one (workload, mode) pair measured."""

    workload: str
    mode: str
    n: int
    steps: int
    elapsed: float
    latencies: list[float]
    before: Snapshot
    after: Snapshot
    commits: int
    sessions: int
    submit_elapsed: float = 0.0
    not_completed: int = 0
    # Worker processes (prefork concurrency) that ran the phase.
    concurrency: int = 2
    # Which round of the raw chain and the engine side by side (bench.main).
    round_no: int = 1
    # Sagas run one by one: where each one's time went (``timeline``).
    timeline: dict[str, float] | None = None

    @property
    def cpu(self) -> float:
        """Return the worker's CPU seconds (all its processes) during the phase."""
        return self.after.worker.cpu - self.before.worker.cpu

    @property
    def pg_cpu(self) -> float | None:
        if self.before.pg is None or self.after.pg is None:
            return None
        return self.after.pg - self.before.pg

    @property
    def others_load(self) -> float:
        """Return the cores busy with processes outside the benchmark, on average.

        The machine may be shared: a high figure means the phase ran beside
        someone else's work and its timings are pessimistic.
        """
        wall = self.after.wall - self.before.wall
        if wall <= 0:
            return 0.0
        ours = sum(
            (after or 0.0) - (before or 0.0)
            for before, after in (
                (self.before.worker.cpu, self.after.worker.cpu),
                (self.before.pg, self.after.pg),
                (self.before.redis, self.after.redis),
                (self.before.harness, self.after.harness),
            )
        )
        return max(0.0, (self.after.busy - self.before.busy - ours) / wall)

    @property
    def pg_cpu_per_saga(self) -> float | None:
        """Return PostgreSQL's CPU seconds per saga (all its processes)."""
        return None if self.pg_cpu is None else self.pg_cpu / self.n

    @property
    def sagas_per_pg_core(self) -> float | None:
        """Return the sagas/s one PostgreSQL core would carry before it saturates."""
        per_saga = self.pg_cpu_per_saga
        return 1.0 / per_saga if per_saga else None

    @property
    def rate(self) -> float:
        return self.n / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Return the ``q`` quantile of the latencies (nearest rank), in seconds."""
        return percentile(self.latencies, q)

    @property
    def commits_per_step(self) -> float:
        return self.commits / (self.n * self.steps)

    @property
    def sessions_per_step(self) -> float:
        return self.sessions / (self.n * self.steps)


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of ``values`` (nearest rank); NaN if empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(q * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Snapshot:
    """CPU and memory readings at one instant."""

    wall: float
    busy: float
    worker: TreeUsage
    pg: float | None
    redis: float | None
    harness: float


@dataclass
class Workload:
    """How to start one saga of a kind, and how its completion is observed."""

    name: str
    steps: int
    # Start saga number ``i``; return the key its completion is reported under.
    start: Callable[[int], str]
    # Transactions the harness commits per start (subtracted from the counters).
    start_commits: int
    # "list": the worker pushes "<key> <time>" onto DONE_LIST when a saga ends;
    # "poll": the harness counts finished sagas in the database.
    completion: str
    # Read end times from Saga.finished_at rather than from the completion list.
    ends_from_db: bool
    loglevel: str = "warning"
    prepare: Callable[[], None] | None = None


class Harness:
    """Shared services for every phase: Redis, the counters, the worker settings."""

    def __init__(
        self, app: Celery, env: dict[str, str], log_dir: Path, database_url: str
    ) -> None:
        self.app = app
        self.env = env
        self.log_dir = log_dir
        self.database_url = database_url
        # BLPOP waits longer than redis-py's default 5 s socket timeout.
        self.redis = redis.Redis.from_url(
            env["CELERY_BROKER_URL"], socket_timeout=WAIT_LIMIT + 30
        )
        server = self.redis.info("server")
        self.redis_version = str(server["redis_version"])
        self.redis_pid = int(server["process_id"])
        dbname = connection.settings_dict["NAME"]
        self.db = DbStats(database_url, dbname)
        self.postmaster = self.db.postmaster_pid()

    def reset(self) -> None:
        """Empty the benchmark's tables and Redis (no worker may be running)."""
        tables = [
            model._meta.db_table
            for label in BENCH_APPS
            for model in apps.get_app_config(label).get_models()
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"
            )
        # A closed session reports its pending statistics at once, so that
        # nothing done so far shows up in the next phase's counters.
        connections.close_all()
        self.redis.flushdb()

    def snapshot(self, worker: Worker) -> Snapshot:
        """Read the worker's, the servers' and the machine's usage now."""
        return Snapshot(
            wall=time.monotonic(),
            busy=machine_busy(),
            worker=tree_usage(worker.pid),
            pg=None if self.postmaster is None else tree_usage(self.postmaster).cpu,
            redis=_cpu_or_none(self.redis_pid),
            harness=time.process_time(),
        )

    def close(self) -> None:
        self.db.close()
        self.redis.close()


def _cpu_or_none(pid: int) -> float | None:
    try:
        return process_cpu(pid)
    except OSError:  # Redis on another host
        return None


def _raw_start(i: int) -> str:
    key = f"raw:{i}"
    raw_chain(key).apply_async()
    return key


def _engine_start(
    i: int, definition: SagaDefinition = BENCH_SAGA, prefix: str = "bench"
) -> str:
    key = f"{prefix}:{i}"
    with transaction.atomic():
        saga_start(definition, business_key=key)
    return key


def _order_start(i: int) -> str:
    from orders.services import LineRequest, checkout

    order, _ = checkout(
        customer_id=f"bench-{i}",
        lines=[LineRequest("WIDGET-1", 1)],
        payment_token="tok_visa",
        shipping_address={
            "name": "Bench Customer",
            "line1": "Hauptstrasse 1",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
        },
    )
    return f"order:{order.pk}"


def _seed_catalogue() -> None:
    call_command("seed_catalog", stock=1_000_000, verbosity=0)


RAW = Workload("raw chain", 3, _raw_start, 0, "list", ends_from_db=False)
ENGINE = Workload("engine", 3, _engine_start, 1, "list", ends_from_db=True)
ENGINE_INFO = Workload(
    "engine, INFO logs", 3, _engine_start, 1, "list", ends_from_db=True, loglevel="info"
)
ORDER = Workload(
    "order saga", 4, _order_start, 1, "poll", ends_from_db=True, prepare=_seed_catalogue
)


def run(
    harness: Harness,
    workload: Workload,
    mode: str,
    n: int,
    concurrency: int = 2,
    round_: int = 1,
) -> Run:
    """Measure ``n`` sagas of ``workload``, one at a time or as one burst."""
    harness.reset()
    if workload.prepare is not None:
        workload.prepare()
    slug = workload.name.split(",")[0].replace(" ", "-")
    worker = Worker(
        harness.app,
        f"bench-{slug}-{mode}-{workload.loglevel}-c{concurrency}-r{round_}",
        harness.env,
        harness.log_dir,
        loglevel=workload.loglevel,
        concurrency=concurrency,
    ).start()
    try:
        window = (_serial if mode == "serial" else _burst)(harness, workload, worker, n)
    finally:
        worker.stop()
    # Stopped workers' sessions have flushed their statistics.
    connections.close_all()
    final = harness.db.settled()
    ends = _finished_at(window.starts) if workload.ends_from_db else window.ends
    spent = (
        timeline(window.starts) if workload.ends_from_db and mode == "serial" else None
    )
    latencies = [end - window.starts[key] for key, end in ends.items()]
    elapsed = max(ends.values()) - min(window.starts.values()) if ends else 0.0
    return Run(
        workload=workload.name,
        mode=mode,
        n=n,
        steps=workload.steps,
        elapsed=elapsed,
        latencies=latencies,
        before=window.before,
        after=window.after,
        commits=final.commits - window.counters.commits - window.harness_commits,
        sessions=final.sessions - window.counters.sessions - window.harness_sessions,
        submit_elapsed=window.submit_elapsed,
        not_completed=n - len(latencies),
        concurrency=concurrency,
        round_no=round_,
        timeline=spent,
    )


@dataclass
class _Window:
    """Readings taken around one phase while its worker runs."""

    starts: dict[str, float]
    ends: dict[str, float]
    counters: DbCounters
    before: Snapshot
    after: Snapshot
    harness_commits: int = 0
    harness_sessions: int = 0
    submit_elapsed: float = 0.0


def _serial(harness: Harness, workload: Workload, worker: Worker, n: int) -> _Window:
    connection.ensure_connection()
    counters = harness.db.settled()
    before = harness.snapshot(worker)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for i in range(n):
        started = time.time()
        starts[workload.start(i)] = started
        key, at = _pop_done(harness)
        ends[key] = at
    return _Window(
        starts=starts,
        ends=ends,
        counters=counters,
        before=before,
        after=harness.snapshot(worker),
        harness_commits=workload.start_commits * n,
    )


def _burst(harness: Harness, workload: Workload, worker: Worker, n: int) -> _Window:
    # Queue the whole burst before the worker takes any of it, so that the
    # drain measures the worker, not the harness creating sagas beside it.
    worker.pause()
    submitted = time.time()
    keys = [workload.start(i) for i in range(n)]
    submit_elapsed = time.time() - submitted
    connections.close_all()  # a closed session flushes its statistics at once
    counters = harness.db.settled()
    before = harness.snapshot(worker)
    released = time.time()
    worker.resume()
    polls = 0
    if workload.completion == "list":
        ends = dict(_pop_done(harness) for _ in range(n))
    else:
        polls = _poll_finished(harness, n)
        ends = {}
    return _Window(
        # Every saga of a burst starts when the worker is let loose on it.
        starts=dict.fromkeys(keys, released),
        ends=ends,
        counters=counters,
        before=before,
        after=harness.snapshot(worker),
        harness_commits=polls,
        harness_sessions=1 if polls else 0,
        submit_elapsed=submit_elapsed,
    )


def _pop_done(harness: Harness) -> tuple[str, float]:
    item = harness.redis.blpop([DONE_LIST], timeout=WAIT_LIMIT)
    if item is None:
        raise RuntimeError(f"no saga finished within {WAIT_LIMIT}s")
    value = item[1]
    text = value.decode() if isinstance(value, bytes) else value
    key, at = text.rsplit(" ", 1)
    return key, float(at)


def _poll_finished(harness: Harness, n: int) -> int:
    """Wait until ``n`` sagas are terminal; return how many polls it took.

    Each poll is one autocommit transaction, subtracted from the counters.
    """
    polls = 0
    deadline = time.monotonic() + WAIT_LIMIT
    with psycopg.connect(harness.database_url, autocommit=True) as conn:
        while True:
            polls += 1
            row = conn.execute(
                "SELECT count(*) FROM sagas_saga WHERE status = ANY(%s)",
                ([str(status) for status in TERMINAL_SAGA_STATUSES],),
            ).fetchone()
            assert row is not None
            if row[0] >= n:
                return polls
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0]} of {n} sagas finished in time")
            time.sleep(ORDER_POLL)


def _finished_at(starts: dict[str, float]) -> dict[str, float]:
    """Return the finished_at of each completed saga as a Unix time."""
    rows = Saga.objects.filter(
        business_key__in=list(starts), status="completed"
    ).values_list("business_key", "finished_at")
    ends = {key: at.timestamp() for key, at in rows if at is not None}
    connections.close_all()
    return ends


# Segments of a saga's time, in the order they happen (``timeline``).
SEGMENTS = (
    ("start", "saga_start called -> the saga's insert"),
    ("first", "the insert -> the first step's lock (COMMIT, publish, broker, worker)"),
    ("step", "a step's lock -> the statement recording it (the action, the engine)"),
    ("between", "that statement -> the next step's lock (the write, COMMIT, BEGIN)"),
)


def timeline(starts: dict[str, float]) -> dict[str, float]:
    """Return the median of each of ``SEGMENTS`` over completed sagas, in seconds.

    From the database's statement times: the saga's ``created_at`` (its
    insert), each attempt's ``started_at`` (the lock's statement) and
    ``finished_at`` (the statement recording it); the start from the harness.
    """
    rows = (
        StepAttempt.objects.filter(
            saga__business_key__in=list(starts), saga__status="completed"
        )
        .order_by("saga_id", "id")
        .values_list(
            "saga__business_key", "saga__created_at", "started_at", "finished_at"
        )
    )
    spans: dict[str, list[float]] = {name: [] for name, _ in SEGMENTS}
    previous: dict[str, float] = {}
    for key, created, started, finished in rows:
        if started is None or finished is None:
            continue
        if key not in previous:
            spans["start"].append(created.timestamp() - starts[key])
            spans["first"].append(started.timestamp() - created.timestamp())
        else:
            spans["between"].append(started.timestamp() - previous[key])
        spans["step"].append(finished.timestamp() - started.timestamp())
        previous[key] = finished.timestamp()
    connections.close_all()
    return {name: statistics.median(values) for name, values in spans.items() if values}
