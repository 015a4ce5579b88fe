"""Saga rows: the instance, one row per step attempt, and the event timeline."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from sagas.states import (
    ACTIVE_SAGA_STATUSES,
    AttemptKind,
    AttemptStatus,
    SagaStatus,
)

_ACTIVE = Q(status__in=ACTIVE_SAGA_STATUSES)


class Saga(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    business_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=16, choices=SagaStatus.choices, default=SagaStatus.PENDING
    )
    context = models.JSONField(default=dict, blank=True)
    # Index into the definition's steps: the step running, or being compensated.
    current_step = models.PositiveSmallIntegerField(default=0)
    current_attempt = models.ForeignKey(
        "StepAttempt",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # When the sweeper must next look at this saga (a deadline, a lease or a backoff).
    wake_at = models.DateTimeField(null=True, blank=True)
    # Why the saga left the happy path: the failing step and its error.
    failed_step = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # The most recent failure of any attempt: why a failed saga is parked.
    last_error = models.TextField(blank=True)
    # W3C trace context (``traceparent``...) of the saga's trace; empty when
    # tracing is off. Every step's span is its child (sagas.tracing).
    trace_context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Partial indexes cover only live sagas, so they stay small however
            # many finished sagas accumulate.
            models.Index(
                fields=["wake_at"], condition=_ACTIVE, name="saga_active_wake"
            ),
            models.Index(
                fields=["updated_at"], condition=_ACTIVE, name="saga_active_updated"
            ),
            models.Index(fields=["status", "-created_at"], name="saga_status_created"),
            models.Index(fields=["definition", "-created_at"], name="saga_def_created"),
            models.Index(fields=["-created_at"], name="saga_created"),
        ]
        permissions = [
            ("retry_saga", "Can retry a saga's failed step or compensation"),
            ("resume_saga", "Can resume a stuck saga"),
            ("compensate_saga", "Can abort a saga and compensate it"),
            ("resolve_saga", "Can mark a failed saga resolved"),
            ("skip_saga", "Can skip a failed compensation done by hand"),
            ("migrate_saga", "Can move a saga to another definition version"),
            ("approve_saga", "Can approve a saga's waiting approval step"),
            ("reject_saga", "Can reject a saga's waiting approval step"),
        ]

    def __str__(self) -> str:
        return f"{self.definition} {self.business_key} ({self.status})"


class StepAttempt(models.Model):
    saga = models.ForeignKey(Saga, on_delete=models.CASCADE, related_name="attempts")
    step = models.CharField(max_length=100)
    step_index = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=16, choices=AttemptKind.choices)
    number = models.PositiveIntegerField()
    # The attempt's place in its retry budget: 1 again after an operator retry.
    try_number = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=AttemptStatus.choices)
    # The action may have changed something even though it did not succeed (it
    # timed out, crashed, failed transiently or partly, or failed after it
    # returned): the step must then be compensated.
    effects_possible = models.BooleanField(default=False)
    # Deliveries counted only on broker redelivery, to park poison messages.
    deliveries = models.PositiveIntegerField(default=0)
    dispatches = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    not_before = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["saga", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["saga", "step", "kind", "number"], name="attempt_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step} {self.kind} #{self.number} ({self.status})"


class SagaEvent(models.Model):
    """An append-only record of one state change."""

    saga = models.ForeignKey(Saga, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(db_default=Now())
    # "engine", "sweeper", or "operator:<username>".
    actor = models.CharField(max_length=150)
    step = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=16, blank=True)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    old_status = models.CharField(max_length=16, blank=True)
    new_status = models.CharField(max_length=16)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["saga", "id"]

    def __str__(self) -> str:
        target = f"{self.step} {self.kind}".strip() or "saga"
        return f"{target}: {self.old_status or '-'} -> {self.new_status}"


class SweeperHeartbeat(models.Model):
    """When a sweeper pass last finished, by the database clock.

    One row per sweeper (today only ``sweep``); a stale row means no beat is
    sending the sweep task, so timeouts, lost steps and backoffs wait.
    """

    name = models.CharField(max_length=50, primary_key=True)
    swept_at = models.DateTimeField()
    # Sagas the last pass handled.
    handled = models.PositiveIntegerField(default=0)
    passes = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.swept_at:%Y-%m-%d %H:%M:%S}"


class ReplyReceipt(models.Model):
    """A signed participant reply already taken: the same signature is refused."""

    participant = models.CharField(max_length=100)
    signature = models.CharField(max_length=128, unique=True)
    received_at = models.DateTimeField(db_default=Now(), db_index=True)

    def __str__(self) -> str:
        return f"reply from {self.participant} at {self.received_at}"
