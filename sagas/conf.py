"""Engine settings with their defaults, read when used (never at import)."""

from __future__ import annotations

from django.conf import settings

from sagas.definition import RetryPolicy

DEFAULTS: dict[str, float | int] = {
    "SAGAS_DISPATCH_LEASE": 30.0,
    "SAGAS_MAX_BROKER_COUNTDOWN": 5.0,
    "SAGAS_COMPENSATION_MAX_ATTEMPTS": 10,
    "SAGAS_COMPENSATION_BACKOFF": 0.5,
    "SAGAS_COMPENSATION_MAX_BACKOFF": 60.0,
    "SAGAS_MAX_DELIVERIES": 5,
    "SAGAS_SWEEP_BATCH": 200,
    "SAGAS_SWEEP_INTERVAL": 2.0,
    "SAGAS_STUCK_AFTER": 300.0,
    # Seconds between a step's soft time limit and the hard kill of its worker.
    "SAGAS_HARD_LIMIT_GRACE": 10.0,
    # Attempts a retriable step gets when it fails with a non-transient error
    # (a bug): it cannot be compensated, so it is parked after these.
    "SAGAS_RETRIABLE_MAX_ERRORS": 3,
    # Seconds an operator action waits for a step holding SQLite's write lock.
    "SAGAS_OPERATOR_LOCK_WAIT": 2.0,
    # A worker that finished a step runs the saga's next one itself, without a
    # message, up to this many steps and seconds; then it hands the saga back
    # to the broker so other sagas get their turn. 0 steps turns it off.
    "SAGAS_INLINE_STEPS": 16,
    "SAGAS_INLINE_SECONDS": 2.0,
    # PostgreSQL: bind the step path's statements on the server and prepare
    # them once per connection. Turn off (0) behind a pooler that cannot keep
    # prepared statements (PgBouncer in transaction mode before 1.21).
    "SAGAS_PREPARED_STATEMENTS": 1,
    # Seconds a participant's signed HTTP reply stays valid.
    "SAGAS_REPLY_MAX_AGE": 300.0,
}


def get(name: str) -> float:
    """Return the setting ``name`` or its default."""
    return float(getattr(settings, name, DEFAULTS[name]))


def compensation_policy() -> RetryPolicy:
    """Return the retry policy that every compensation follows."""
    return RetryPolicy(
        max_attempts=int(get("SAGAS_COMPENSATION_MAX_ATTEMPTS")),
        backoff=get("SAGAS_COMPENSATION_BACKOFF"),
        max_backoff=get("SAGAS_COMPENSATION_MAX_BACKOFF"),
    )


def sweep_stale_after() -> float:
    """Return after how many seconds without a sweep the sweeper counts as down.

    ``SAGAS_SWEEP_STALE_AFTER`` when set; otherwise five sweep intervals, and
    never under 30 s so that a beat restart does not raise the alarm.
    """
    configured = getattr(settings, "SAGAS_SWEEP_STALE_AFTER", None)
    if configured is not None:
        return float(configured)
    return max(5 * get("SAGAS_SWEEP_INTERVAL"), 30.0)
