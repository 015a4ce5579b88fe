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
    id = models.UUIDField(
        primary_key=True,
        default=uuid.uuid4,
        editable=False,
        help_text="The saga's id: its steps' idempotency keys start with it.",
    )
    definition = models.CharField(
        max_length=100, help_text="The name of the saga definition it runs."
    )
    version = models.PositiveIntegerField(
        help_text="The definition version it started with, and keeps until it "
        "finishes or an operator moves it to another."
    )
    business_key = models.CharField(
        max_length=200,
        unique=True,
        help_text="What the saga is about, unique among sagas (e.g. order:42).",
    )
    status = models.CharField(
        max_length=16,
        choices=SagaStatus.choices,
        default=SagaStatus.PENDING,
        help_text="Pending, running or compensating while it is in progress; "
        "completed, compensated or resolved once done; failed when compensation "
        "could not finish and an operator must act.",
    )
    context = models.JSONField(
        default=dict,
        blank=True,
        help_text="The JSON the steps read and extend: the saga's input and "
        "what its steps returned.",
    )
    current_step = models.PositiveSmallIntegerField(
        default=0,
        help_text="The index in the definition of the step running, or being "
        "compensated.",
    )
    current_attempt = models.ForeignKey(
        "StepAttempt",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="The attempt the saga waits for, or the one that parked it; "
        "a task for any other attempt does nothing.",
    )
    wake_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the sweeper must next look at the saga: a deadline, a "
        "lease or a retry backoff.",
    )
    failed_step = models.CharField(
        max_length=100,
        blank=True,
        help_text="The step whose failure sent the saga off the happy path.",
    )
    error = models.TextField(
        blank=True, help_text="Why the saga left the happy path: that step's error."
    )
    last_error = models.TextField(
        blank=True,
        help_text="The most recent failure of any attempt: why a failed saga is "
        "parked.",
    )
    trace_context = models.JSONField(
        default=dict,
        blank=True,
        help_text="The W3C trace context (traceparent, ...) of the saga's trace, "
        "parent of every step's span; empty when tracing is off.",
    )
    created_at = models.DateTimeField(
        db_default=Now(), help_text="When the saga started (database clock)."
    )
    updated_at = models.DateTimeField(
        db_default=Now(), help_text="When the saga last changed (database clock)."
    )
    finished_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the saga completed, was compensated or was resolved.",
    )

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
    saga = models.ForeignKey(
        Saga,
        on_delete=models.CASCADE,
        related_name="attempts",
        help_text="The saga this attempt belongs to.",
    )
    step = models.CharField(max_length=100, help_text="The step's name.")
    step_index = models.PositiveSmallIntegerField(
        help_text="The step's index in the saga's definition."
    )
    kind = models.CharField(
        max_length=16,
        choices=AttemptKind.choices,
        help_text="Whether this runs the step's action or its compensation.",
    )
    number = models.PositiveIntegerField(
        help_text="Which run of this step and kind it is: 1, 2, ..."
    )
    try_number = models.PositiveIntegerField(
        default=1,
        help_text="The attempt's place in its retry budget: 1 again after an "
        "operator retry.",
    )
    status = models.CharField(
        max_length=16,
        choices=AttemptStatus.choices,
        help_text="Scheduled, dispatched or waiting while open; succeeded, "
        "failed, timed out, cancelled or skipped once closed.",
    )
    # Set when the action timed out, crashed, failed transiently or partly, or
    # failed after it returned.
    effects_possible = models.BooleanField(
        default=False,
        help_text="The action may have changed something even though it did not "
        "succeed: the step must then be compensated.",
    )
    deliveries = models.PositiveIntegerField(
        default=0,
        help_text="How often the broker delivered the attempt again (counted to "
        "park a message that keeps killing its worker).",
    )
    dispatches = models.PositiveIntegerField(
        default=0, help_text="How many messages were sent for the attempt."
    )
    created_at = models.DateTimeField(
        db_default=Now(), help_text="When the attempt was created (database clock)."
    )
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="The end of its retry backoff."
    )
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When its last message was sent."
    )
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker started it."
    )
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it closed."
    )
    deadline_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Past this, the sweeper times the attempt out (the step's timeout).",
    )
    error_type = models.CharField(
        max_length=200, blank=True, help_text="The dotted path of the error's class."
    )
    error = models.TextField(blank=True, help_text="The error it failed with.")
    result = models.JSONField(
        null=True,
        blank=True,
        help_text="What the action or compensation returned, merged into the "
        "saga's context.",
    )

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

    saga = models.ForeignKey(
        Saga,
        on_delete=models.CASCADE,
        related_name="events",
        help_text="The saga that changed.",
    )
    created_at = models.DateTimeField(
        db_default=Now(), help_text="When it changed (database clock)."
    )
    actor = models.CharField(
        max_length=150,
        help_text="Who changed it: engine, sweeper, or operator:<username>.",
    )
    step = models.CharField(
        max_length=100, blank=True, help_text="The step; empty for the saga itself."
    )
    kind = models.CharField(
        max_length=16, blank=True, help_text="action or compensation, with a step."
    )
    attempt = models.PositiveIntegerField(
        null=True, blank=True, help_text="The step attempt's number, with a step."
    )
    old_status = models.CharField(
        max_length=16, blank=True, help_text="The status before; empty on creation."
    )
    new_status = models.CharField(max_length=16, help_text="The status after.")
    detail = models.TextField(
        blank=True, help_text="An error, or an operator's reason."
    )

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

    name = models.CharField(
        max_length=50, primary_key=True, help_text="The sweeper (today: sweep)."
    )
    swept_at = models.DateTimeField(
        help_text="When its last pass finished (database clock)."
    )
    handled = models.PositiveIntegerField(
        default=0, help_text="How many sagas the last pass handled."
    )
    passes = models.PositiveBigIntegerField(
        default=0, help_text="How many passes have finished."
    )

    def __str__(self) -> str:
        return f"{self.name} at {self.swept_at:%Y-%m-%d %H:%M:%S}"


class ReplyReceipt(models.Model):
    """A signed participant reply already taken: the same signature is refused."""

    participant = models.CharField(
        max_length=100, help_text="The participant whose secret signed the reply."
    )
    signature = models.CharField(
        max_length=128,
        unique=True,
        help_text="The reply's signature: the same one again is refused.",
    )
    received_at = models.DateTimeField(
        db_default=Now(), db_index=True, help_text="When the reply was taken."
    )

    def __str__(self) -> str:
        return f"reply from {self.participant} at {self.received_at}"
