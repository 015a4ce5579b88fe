from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxEvent(models.Model):
    """An event written in the transaction that decided it; sent after commit."""

    id = models.UUIDField(
        primary_key=True,
        default=uuid.uuid4,
        editable=False,
        help_text="The event's id: consumers record it, so a redelivery changes "
        "nothing.",
    )
    event_type = models.CharField(
        max_length=200, help_text="What happened, e.g. payment.processed."
    )
    correlation_id = models.UUIDField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The id of the flow the event belongs to.",
    )
    flow_type = models.CharField(
        max_length=200, blank=True, help_text="The type of the flow it belongs to."
    )
    flow_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="The business key of that flow (e.g. order:42).",
    )
    payload = models.JSONField(default=dict, help_text="The event's data.")
    created_at = models.DateTimeField(
        db_default=Now(),
        help_text="When the transaction that published it wrote it.",
    )
    sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it was last sent to the broker; empty until then, and "
        "the sweeper sends it.",
    )
    sends = models.PositiveIntegerField(
        default=0, help_text="How often it was sent to the broker."
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # The sweeper's scan: unsent rows, oldest first.
            models.Index(
                fields=["created_at"],
                condition=Q(sent_at__isnull=True),
                name="saga_outbox_unsent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"


class InboxEntry(models.Model):
    """An event a consumer has handled: its effect committed with this row."""

    consumer = models.CharField(
        max_length=200, help_text="The consumer (a service) that handled it."
    )
    event_id = models.UUIDField(help_text="The id of the event handled.")
    event_type = models.CharField(max_length=200, help_text="The event's type.")
    correlation_id = models.UUIDField(
        null=True, blank=True, help_text="The id of the event's flow."
    )
    processed_at = models.DateTimeField(
        db_default=Now(), help_text="When the handler's transaction committed."
    )

    class Meta:
        verbose_name_plural = "inbox entries"
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "event_id"], name="saga_inbox_once_per_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["consumer", "correlation_id"], name="saga_inbox_by_flow"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_type} {self.event_id}"


class FlowStatus(models.TextChoices):
    # Events are flowing; no outcome yet.
    RUNNING = "running", "Running"
    # Its completion event was seen.
    COMPLETED = "completed", "Completed"
    # A failure event was seen; compensation events are under way.
    COMPENSATING = "compensating", "Compensating"
    # Every compensation is done: the flow failed cleanly.
    COMPENSATED = "compensated", "Compensated"
    # Not finished, and no event within its timeout: an operator should look.
    STUCK = "stuck", "Stuck"


class Flow(models.Model):
    """A choreographed flow as the tracker sees it, one row per correlation id."""

    id = models.UUIDField(
        primary_key=True,
        editable=False,
        help_text="The flow's correlation id, carried by each of its events.",
    )
    flow_type = models.CharField(
        max_length=200, db_index=True, help_text="The declared flow it follows."
    )
    business_key = models.CharField(
        max_length=200,
        blank=True,
        db_index=True,
        help_text="What the flow is about (e.g. order:42).",
    )
    status = models.CharField(
        max_length=16,
        choices=FlowStatus.choices,
        default=FlowStatus.RUNNING,
        help_text="Running; completed, compensating or compensated by the "
        "events seen; stuck when no event came within its timeout.",
    )
    last_event_type = models.CharField(
        max_length=200, blank=True, help_text="The type of its latest event."
    )
    event_count = models.PositiveIntegerField(
        default=0, help_text="How many of its events the tracker recorded."
    )
    started_at = models.DateTimeField(
        db_default=Now(), help_text="When the tracker saw its first event."
    )
    last_event_at = models.DateTimeField(
        db_default=Now(), help_text="When the tracker saw its latest event."
    )
    deadline = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Past this, with no new event, the sweeper flags the flow stuck.",
    )
    stuck_since = models.DateTimeField(
        null=True, blank=True, help_text="When the sweeper flagged it stuck."
    )
    # In case the broker lost a delivery.
    redeliveries = models.PositiveIntegerField(
        default=0, help_text="How often the sweeper sent the flow's events again."
    )
    redelivered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sweeper last sent them again."
    )
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it completed or was compensated."
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(
                fields=["deadline"],
                condition=Q(status__in=["running", "compensating"]),
                name="saga_flow_open_deadline",
            ),
            models.Index(fields=["status", "-started_at"], name="saga_flow_status"),
        ]

    def __str__(self) -> str:
        return f"{self.flow_type} {self.business_key or self.id} ({self.status})"


class FlowEvent(models.Model):
    """One event of a flow's timeline, recorded once per event id."""

    flow = models.ForeignKey(
        Flow,
        on_delete=models.CASCADE,
        related_name="events",
        help_text="The flow the event belongs to.",
    )
    event_id = models.UUIDField(
        unique=True, help_text="The event's id: recorded once, however often sent."
    )
    event_type = models.CharField(max_length=200, help_text="What happened.")
    payload = models.JSONField(default=dict, help_text="The event's data.")
    occurred_at = models.DateTimeField(
        help_text="When it was published: the timeline's order."
    )
    recorded_at = models.DateTimeField(
        db_default=Now(), help_text="When the tracker recorded it."
    )

    class Meta:
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
