"""System checks: settings that would make delivery unsafe."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register
from django.db import DatabaseError

from sagas import conf, registry


@register()
def visibility_timeout_check(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn unless the Redis visibility timeout outlasts any countdown plus any step.

    An unacked message comes back after the visibility timeout; an ETA or a step
    longer than it is delivered again and again (celery#2599, kombu#337). The
    engine fences the copies, but each costs a worker a wasted delivery.
    """
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    if "visibility_timeout" not in options:
        return []
    longest_step = max(
        (
            step.timeout
            for name in registry.names()
            for step in registry.get(name).steps
        ),
        default=0.0,
    )
    needed = (
        conf.get("SAGAS_MAX_BROKER_COUNTDOWN")
        + longest_step
        + conf.get("SAGAS_HARD_LIMIT_GRACE")
    )
    if options["visibility_timeout"] > needed:
        return []
    return [
        Warning(
            f"broker visibility_timeout ({options['visibility_timeout']}s) must exceed "
            f"SAGAS_MAX_BROKER_COUNTDOWN + the longest step timeout + the hard-limit "
            f"grace ({needed:.0f}s)",
            hint="Raise CELERY_VISIBILITY_TIMEOUT or lower the countdown/timeouts.",
            id="sagas.W001",
        )
    ]


@register()
def sweeper_heartbeat_check(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when live sagas exist and no sweep has run for a few intervals.

    Without the sweeper nothing re-sends a lost step, times out a dead
    worker's step or dispatches a long backoff: such sagas wait forever.
    """
    from sagas.selectors import sweeper_health

    try:
        health = sweeper_health()
    except DatabaseError:
        # Not migrated yet (``migrate`` runs the checks first).
        return []
    if not health.alarming:
        return []
    return [
        Warning(
            f"{health.describe()} (expected every "
            f"{conf.get('SAGAS_SWEEP_INTERVAL'):g}s) while sagas are in progress: "
            "timeouts, lost steps and backoffs are not being handled",
            hint=(
                "Run celery beat (`celery -A config beat -S django`); it installs "
                "the sweep schedule itself. If it runs, check that the periodic "
                "task 'sagas: sweep ...' is enabled in the admin and that a "
                "worker consumes the default queue."
            ),
            id="sagas.W002",
        )
    ]
