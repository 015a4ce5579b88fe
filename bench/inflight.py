"""Sagas already in flight while a burst of new ones is drained.

Tracer sagas start first; their first step flakes and waits for a retry. While
they wait, a burst of new sagas is queued behind a paused worker; the retries
fall due shortly after the worker is released, with most of the burst still
queued. A tracer's latency counts from its retry's due time (or the release,
whichever is later) to its end: what the burst adds to a saga that had already
begun.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connections

from bench.sagas import TRACER_SAGA
from bench.throughput import (
    Harness,
    _engine_start,
    _finished_at,
    _pop_done,
    percentile,
)
from bench.worker import Worker
from sagas.models import StepAttempt
from sagas.states import AttemptStatus

# Seconds after the release at which the tracers' retries fall due.
DUE_AFTER_RELEASE = 1.0
CALIBRATION = 100


@dataclass(frozen=True)
class InFlight:
    """What the tracers measured beside one burst."""

    tracers: int
    burst: int
    # Seconds from each tracer's due time to its end.
    latencies: list[float]
    # Sagas of the burst still unfinished when the median tracer ended.
    burst_left_at_median: int
    burst_elapsed: float

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def _queue_seconds(n: int) -> float:
    """Return how long queuing ``n`` sagas takes here (no worker running)."""
    began = time.monotonic()
    for i in range(CALIBRATION):
        _engine_start(i)
    return (time.monotonic() - began) * n / CALIBRATION


def run(harness: Harness, tracers: int, burst: int) -> InFlight:
    """Drain ``burst`` new sagas while ``tracers`` begun ones wait for a retry."""
    harness.reset()
    # The tracers' retries must fall due after the burst is queued.
    backoff = _queue_seconds(burst) * 1.2 + DUE_AFTER_RELEASE
    harness.reset()
    env = {
        **harness.env,
        "BENCH_TRACER_BACKOFF": f"{backoff:.3f}",
        # The retry goes to the broker as a countdown, as a short backoff does,
        # rather than waiting for a sweeper (the phase runs no beat).
        "SAGAS_MAX_BROKER_COUNTDOWN": f"{backoff + 5:.0f}",
    }
    worker = Worker(harness.app, "bench-inflight", env, harness.log_dir).start()
    try:
        keys = [_engine_start(i, TRACER_SAGA, "tracer") for i in range(tracers)]
        _wait_for_retries(tracers)
        worker.pause()
        burst_keys = [_engine_start(i) for i in range(burst)]
        released = time.time()
        worker.resume()
        ends = dict(_pop_done(harness) for _ in range(tracers + burst))
    finally:
        worker.stop()
    tracer_ends = _finished_at(dict.fromkeys(keys, 0.0))
    due = _retry_due_times(list(tracer_ends))
    latencies = [
        end - max(due.get(key, released), released) for key, end in tracer_ends.items()
    ]
    median_end = sorted(tracer_ends.values())[len(tracer_ends) // 2]
    burst_ends = [ends[key] for key in burst_keys]
    connections.close_all()
    return InFlight(
        tracers=tracers,
        burst=burst,
        latencies=latencies,
        burst_left_at_median=sum(1 for end in burst_ends if end > median_end),
        burst_elapsed=max(burst_ends) - released,
    )


def _wait_for_retries(tracers: int, timeout: float = 60.0) -> None:
    """Wait until every tracer's first attempt has failed and its retry waits."""
    deadline = time.monotonic() + timeout
    while (
        StepAttempt.objects.filter(
            saga__business_key__startswith="tracer:",
            number=1,
            status=AttemptStatus.FAILED,
        ).count()
        < tracers
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the tracers' first attempts did not fail in time")
        time.sleep(0.05)


def _retry_due_times(keys: list[str]) -> dict[str, float]:
    """Return when each tracer's retry fell due, by business key."""
    rows = (
        StepAttempt.objects.filter(saga__business_key__in=keys, number=2)
        .exclude(not_before=None)
        .values_list("saga__business_key", "not_before")
    )
    return {key: at.timestamp() for key, at in rows if at is not None}
