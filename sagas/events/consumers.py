"""Consumers: handlers per event type, each taking effect once per event id.

A handler runs in its own transaction together with its inbox row; a
redelivered event finds the row and changes nothing. Handlers of one consumer
for one flow run one at a time (a lock per consumer and correlation id), so a
handler can look at what its consumer has already seen for the flow
(``seen``) and stay correct when events arrive out of order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import structlog
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from sagas.errors import DefinitionError
from sagas.events import conf
from sagas.events.envelope import Event, current_event
from sagas.events.models import InboxEntry

log = structlog.get_logger("sagas.events")

HandlerFunc = Callable[[Event], None]


@dataclass(frozen=True)
class Handler:
    consumer: str
    event_type: str
    func: HandlerFunc


_handlers: dict[str, dict[str, Handler]] = {}


def handler(event_type: str, *, consumer: str) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register the decorated function as ``consumer``'s handler of ``event_type``.

    ``consumer`` names the inbox: keep it stable, since a renamed consumer
    would handle every event again.
    """

    def register(func: HandlerFunc) -> HandlerFunc:
        by_consumer = _handlers.setdefault(event_type, {})
        existing = by_consumer.get(consumer)
        if existing is not None and existing.func is not func:
            raise DefinitionError(
                f"{consumer!r} already handles {event_type!r} with {existing.func!r}"
            )
        by_consumer[consumer] = Handler(consumer, event_type, func)
        return func

    return register


def handlers_for(event_type: str) -> list[Handler]:
    """Return the handlers registered for ``event_type``, by consumer name."""
    return [h for _, h in sorted(_handlers.get(event_type, {}).items())]


def seen(*, consumer: str, correlation_id: UUID | str | None) -> set[str]:
    """Return the event types ``consumer`` has handled for a flow (committed)."""
    if correlation_id is None:
        return set()
    return set(
        InboxEntry.objects.filter(
            consumer=consumer, correlation_id=correlation_id
        ).values_list("event_type", flat=True)
    )


def _lock(consumer: str, key: str) -> None:
    # A transaction-scoped advisory lock per consumer and flow. SQLite needs
    # none: its IMMEDIATE transactions already take the database's write lock.
    if connection.vendor != "postgresql":
        return
    digest = zlib.crc32(f"{consumer}\0{key}".encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x5A6A, digest - 2**31])


def handle(item: Handler, event: Event) -> bool:
    """Run one handler for one event, once; return False if it ran before.

    The handler's writes, the events it publishes and its inbox row commit
    together or not at all.
    """
    try:
        with transaction.atomic():
            _lock(item.consumer, str(event.correlation_id or event.event_id))
            done = InboxEntry.objects.filter(
                consumer=item.consumer, event_id=event.event_id
            ).exists()
            if done:
                return False
            token = current_event.set(event)
            try:
                item.func(event)
            finally:
                current_event.reset(token)
            InboxEntry.objects.create(
                consumer=item.consumer,
                event_id=event.event_id,
                event_type=event.event_type,
                correlation_id=event.correlation_id,
            )
    except IntegrityError:
        # Only if the same event was handled concurrently without a
        # correlation lock on this database: the other run's effect stands.
        if InboxEntry.objects.filter(
            consumer=item.consumer, event_id=event.event_id
        ).exists():
            return False
        raise
    return True


def deliver(event: Event) -> list[str]:
    """Run every local handler of ``event`` once each; return those that ran now.

    Each handler commits on its own: if one fails, those before it stay done
    and a redelivery runs only the rest. The first failure is raised after
    every handler had its turn.
    """
    from sagas.events.tracker import track

    if conf.get("SAGA_EVENTS_TRACK") and event.correlation_id is not None:
        track(event)
    ran: list[str] = []
    failure: Exception | None = None
    for item in handlers_for(event.event_type):
        try:
            if handle(item, event):
                ran.append(item.consumer)
        except Exception as exc:
            log.warning(
                "event.handler_failed",
                consumer=item.consumer,
                event_type=event.event_type,
                event_id=str(event.event_id),
                error=str(exc),
            )
            failure = failure or exc
    if failure is not None:
        raise failure
    return ran


def purge_inbox(*, days: float | None = None) -> int:
    """Delete inbox rows older than the retention; return how many.

    Keep it longer than any event can be redelivered after it was handled.
    """
    keep = float(days if days is not None else conf.get("SAGA_EVENTS_RETENTION_DAYS"))
    deleted, _ = InboxEntry.objects.filter(
        processed_at__lt=timezone.now() - timedelta(days=keep)
    ).delete()
    return deleted
