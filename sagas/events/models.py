from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxEvent(models.Model):
    """An event written in the transaction that decided it; sent after commit."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=200)
    correlation_id = models.UUIDField(null=True, blank=True, db_index=True)
    flow_type = models.CharField(max_length=200, blank=True)
    flow_key = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)

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

    consumer = models.CharField(max_length=200)
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=200)
    correlation_id = models.UUIDField(null=True, blank=True)
    processed_at = models.DateTimeField(db_default=Now())

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

    id = models.UUIDField(primary_key=True, editable=False)
    flow_type = models.CharField(max_length=200, db_index=True)
    business_key = models.CharField(max_length=200, blank=True, db_index=True)
    status = models.CharField(
        max_length=16, choices=FlowStatus.choices, default=FlowStatus.RUNNING
    )
    last_event_type = models.CharField(max_length=200, blank=True)
    event_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(db_default=Now())
    last_event_at = models.DateTimeField(db_default=Now())
    # Past this, with no new event, the sweeper flags the flow stuck.
    deadline = models.DateTimeField(null=True, blank=True)
    stuck_since = models.DateTimeField(null=True, blank=True)
    # The sweeper re-sent the flow's events this often (and last then), in
    # case the broker lost a delivery.
    redeliveries = models.PositiveIntegerField(default=0)
    redelivered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

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

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="events")
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
