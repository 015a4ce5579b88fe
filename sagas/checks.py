"""System checks: settings that would make delivery unsafe."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
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
            for definition in registry.definitions()
            for step in definition.steps
        ),
        default=0.0,
    )
    needed = (
        conf.get("SAGAS_MAX_BROKER_COUNTDOWN")
        + longest_step
        + conf.get("SAGAS_INLINE_SECONDS")
        + conf.get("SAGAS_HARD_LIMIT_GRACE")
    )
    if options["visibility_timeout"] > needed:
        return []
    return [
        Warning(
            f"broker visibility_timeout ({options['visibility_timeout']}s) must exceed "
            "SAGAS_MAX_BROKER_COUNTDOWN + the longest step timeout + "
            f"SAGAS_INLINE_SECONDS + the hard-limit grace ({needed:.0f}s)",
            hint="Raise CELERY_VISIBILITY_TIMEOUT or lower the countdown/timeouts.",
            id="sagas.W001",
        )
    ]


@register(Tags.database)
def versions_in_code_check(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about sagas in flight whose definition version is not in the code.

    They cannot move (the engine parks them): deploy the version again, marked
    ``retired=True``, or move them to another version from the admin. Run with
    ``manage.py check --database default`` (``migrate`` runs it too).
    """
    if not databases:
        return []
    from sagas.selectors import versions_in_flight

    try:
        versions = versions_in_flight()
    except DatabaseError:
        # Tables not created yet: nothing is in flight.
        return []
    return [
        Warning(
            f"{v.active} active and {v.failed} parked saga(s) run "
            f"{v.definition!r} version {v.version}, which is not in the code",
            hint="Register that version again with retired=True until its sagas "
            "finish, or move them to another version (admin: Move to version).",
            obj=f"{v.definition} v{v.version}",
            id="sagas.W003",
        )
        for v in versions
        if not v.in_code and (v.active or v.failed)
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
