"""System checks: settings that would make delivery unsafe."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

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
