from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class ShipmentStatus(models.TextChoices):
    # Booked with the carrier.
    CREATED = "created", "Created"
    # Cancelled by a compensation.
    CANCELLED = "cancelled", "Cancelled"


class Shipment(models.Model):
    idempotency_key = models.CharField(max_length=200, unique=True)
    saga_id = models.UUIDField(db_index=True)
    reference = models.CharField(max_length=200, db_index=True)
    address = models.JSONField()
    country = models.CharField(max_length=2)
    status = models.CharField(max_length=16, choices=ShipmentStatus.choices)
    tracking_number = models.CharField(max_length=64)
    created_at = models.DateTimeField(db_default=Now())
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.reference} to {self.country} ({self.status})"


class CarrierBookingStatus(models.TextChoices):
    BOOKED = "booked", "Booked"
    CANCELLED = "cancelled", "Cancelled"
    # Cancelled before it was booked: a late booking with this key is refused.
    VOIDED = "voided", "Voided"


class CarrierBooking(models.Model):
    """The sandbox carrier's own books (routed to the sandbox connection)."""

    sandbox_provider = True

    key = models.CharField(max_length=200, unique=True)
    country = models.CharField(max_length=2)
    status = models.CharField(max_length=16, choices=CarrierBookingStatus.choices)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"booking {self.key} ({self.status})"
