"""A trip and the bookings its saga makes with (simulated) providers."""

from __future__ import annotations

from django.db import models


class TripStatus(models.TextChoices):
    PENDING = "pending"  # the saga is booking
    BOOKED = "booked"  # every booking held and the itinerary sent
    CANCELLED = "cancelled"  # a booking failed; the others were undone


class Trip(models.Model):
    traveller = models.CharField(max_length=100)
    destination = models.CharField(max_length=3)
    with_car = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=TripStatus.choices, default=TripStatus.PENDING
    )
    failure_reason = models.TextField(blank=True)
    saga_id = models.UUIDField(null=True, blank=True)

    def __str__(self) -> str:
        return f"trip {self.pk} to {self.destination} ({self.status})"


class Booking(models.Model):
    """One provider's booking; the idempotency key makes a retry find it again."""

    trip = models.ForeignKey(Trip, on_delete=models.CASCADE, related_name="bookings")
    kind = models.CharField(max_length=16)  # hotel, flight, car, itinerary
    idempotency_key = models.CharField(max_length=200, unique=True)
    cancelled = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.kind} for trip {self.trip_id}"
