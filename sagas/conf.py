"""Engine settings with their defaults, read when used (never at import)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from sagas.definition import RetryPolicy

# Every setting of the engine and its default: a project sets only those it
# changes (the README's settings table lists them too).
DEFAULTS: dict[str, Any] = {
    # Seconds a dispatched step may go unfinished (a lost message, a dead
    # worker) before the sweeper sends it again.
    "SAGAS_DISPATCH_LEASE": 30.0,
    # Longest retry backoff sent as a broker countdown; longer ones wait in
    # the database for the sweeper.
    "SAGAS_MAX_BROKER_COUNTDOWN": 5.0,
    # Attempts of a compensation (every error is retried) before the saga is
    # parked, and their backoff: first wait and cap, in seconds.
    "SAGAS_COMPENSATION_MAX_ATTEMPTS": 10,
    "SAGAS_COMPENSATION_BACKOFF": 0.5,
    "SAGAS_COMPENSATION_MAX_BACKOFF": 60.0,
    # Broker redeliveries of one step message (its worker keeps dying) before
    # the attempt is parked as poison.
    "SAGAS_MAX_DELIVERIES": 5,
    # Sagas claimed per sweeper transaction.
    "SAGAS_SWEEP_BATCH": 200,
    # Seconds between sweeps when beat installs the schedule.
    "SAGAS_SWEEP_INTERVAL": 2.0,
    # Seconds without a sweep before the check and the admin raise the alarm;
    # None: five sweep intervals, at least 30 s (see ``sweep_stale_after``).
    "SAGAS_SWEEP_STALE_AFTER": None,
    # Seconds without progress after which an active saga counts as stuck.
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
    # Participants replying over HTTP and their signing secrets: name -> secret.
    "SAGAS_PARTICIPANTS": {},
    # Seconds a participant's signed HTTP reply stays valid.
    "SAGAS_REPLY_MAX_AGE": 300.0,
    # Modules besides installed apps' ``sagas.py`` that register definitions.
    "SAGAS_DEFINITION_MODULES": (),
}


def value(name: str) -> Any:
    """Return the setting ``name`` as the project set it, or its default."""
    return getattr(settings, name, DEFAULTS[name])


def get(name: str) -> float:
    """Return the numeric setting ``name`` or its default."""
    return float(value(name))


def compensation_policy() -> RetryPolicy:
    """Return the retry policy that every compensation follows."""
    return RetryPolicy(
        max_attempts=int(get("SAGAS_COMPENSATION_MAX_ATTEMPTS")),
        backoff=get("SAGAS_COMPENSATION_BACKOFF"),
        max_backoff=get("SAGAS_COMPENSATION_MAX_BACKOFF"),
    )


def sweep_stale_after() -> float:
    """Return after how many seconds without a sweep the sweeper counts as down.

    ``SAGAS_SWEEP_STALE_AFTER`` when set; otherwise ``five_sweep_intervals()``.
    """
    configured = value("SAGAS_SWEEP_STALE_AFTER")
    if configured is not None:
        return float(configured)
    return five_sweep_intervals()


def five_sweep_intervals() -> float:
    """Return five sweep intervals, never under 30 s (a beat restart is no alarm)."""
    return max(5 * get("SAGAS_SWEEP_INTERVAL"), 30.0)
