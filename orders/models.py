from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Now


class OrderStatus(models.TextChoices):
    # Placed; its saga is running.
    PENDING = "pending", "Pending"
    # Paid, shipped and confirmed to the customer.
    CONFIRMED = "confirmed", "Confirmed"
    # Could not be fulfilled; everything taken was given back.
    FAILED = "failed", "Failed"
    # Its saga is parked: an operator is putting things right.
    ON_HOLD = "on_hold", "On hold"


class Order(models.Model):
    # Random, so the id can serve as the customer's unguessable tracking link.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer_id = models.CharField(max_length=100, db_index=True)
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    failure_reason = models.TextField(blank=True)
    total_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="EUR")
    shipping_address = models.JSONField()
    saga_id = models.UUIDField(null=True, blank=True, unique=True)
    # Unique per customer while it lasts (ORDERS_IDEMPOTENCY_TTL): another
    # customer's key is none of this one's business.
    # NULL, not "", for "no key": the unique constraint skips NULLs.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=200, null=True, blank=True
    )
    # sha256 of the request body, to tell a retry from a different order under one key.
    request_fingerprint = models.CharField(max_length=64, blank=True)
    # Set by the confirmation step; the email leaves once that step commits.
    confirmation_queued_at = models.DateTimeField(null=True, blank=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="order_status_created")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer_id", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="order_idempotency_per_customer",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price_cents = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"
