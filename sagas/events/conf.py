"""Settings of the events app with their defaults, read when used."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Queues the relay sends every event to: one per consuming service.
    "SAGA_EVENTS_QUEUES": ["celery"],
    # Seconds an unsent outbox row waits for its after-commit send before the
    # sweeper sends it instead.
    "SAGA_EVENTS_RELAY_LEASE": 5.0,
    # Rows the sweeper claims per pass (one transaction, one broker connection).
    "SAGA_EVENTS_SWEEP_BATCH": 200,
    "SAGA_EVENTS_SWEEP_INTERVAL": 2.0,
    # Seconds a flow may go without an event before it is flagged stuck, for
    # flow types that do not set their own.
    "SAGA_EVENTS_FLOW_TIMEOUT": 300.0,
    # Deliveries of an event whose handler keeps failing before it is given up
    # (the flow then shows as stuck).
    "SAGA_EVENTS_MAX_RETRIES": 10,
    "SAGA_EVENTS_RETRY_BACKOFF": 0.5,
    "SAGA_EVENTS_RETRY_MAX_BACKOFF": 30.0,
    # Seconds an open flow may go without an event before the sweeper sends
    # its events again (a delivery the broker lost; inboxes absorb the rest),
    # and how many times it does so before leaving the flow to its timeout.
    "SAGA_EVENTS_REDELIVER_AFTER": 30.0,
    "SAGA_EVENTS_MAX_REDELIVERIES": 5,
    # Days sent outbox rows and inbox rows are kept.
    "SAGA_EVENTS_RETENTION_DAYS": 7,
    # Record correlated events in the flow timeline in this process.
    "SAGA_EVENTS_TRACK": True,
    # Send after commit; off only to hand relaying to something else (tests
    # that reorder and duplicate deliveries).
    "SAGA_EVENTS_RELAY_ON_COMMIT": True,
}


def get(name: str) -> Any:
    """Return the setting ``name`` or its default."""
    return getattr(settings, name, DEFAULTS[name])
