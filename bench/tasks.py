"""The baseline: a raw Celery chain of three no-op tasks, with no persistence."""

from __future__ import annotations

import os
import time

import redis
from celery import chain, shared_task
from celery.canvas import Signature

# The last task reports completion here, so that the baseline writes nothing to
# the database; the engine's benchmark saga reports to the same list.
DONE_LIST = "bench:done"

_redis: redis.Redis | None = None


def report_done(key: str, at: float) -> None:
    """Push "<key> <unix time>" onto the completion list."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    _redis.rpush(DONE_LIST, f"{key} {at!r}")


@shared_task(name="bench.noop", ignore_result=True)
def noop_task(key: str, step: int) -> None:
    """Do nothing: one hop of the chain."""


@shared_task(name="bench.noop_last", ignore_result=True)
def noop_last_task(key: str) -> None:
    """Do nothing, then report the chain finished."""
    report_done(key, time.time())


def raw_chain(key: str) -> Signature:
    """Return the three-task chain that stands for one saga."""
    return chain(noop_task.si(key, 1), noop_task.si(key, 2), noop_last_task.si(key))
