from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price_cents = models.PositiveIntegerField()
    stock_free = models.IntegerField(default=0)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(
                condition=Q(stock_free__gte=0), name="product_stock_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.sku


class ReservationStatus(models.TextChoices):
    # Held for a saga in flight, or sold to a confirmed order.
    RESERVED = "reserved", "Reserved"
    # Given back to free stock by a compensation.
    RELEASED = "released", "Released"


class Reservation(models.Model):
    saga_id = models.UUIDField(db_index=True)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16,
        choices=ReservationStatus.choices,
        default=ReservationStatus.RESERVED,
    )
    created_at = models.DateTimeField(db_default=Now())
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["saga_id", "product"], name="reservation_unique_per_saga"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id} for {self.saga_id} ({self.status})"
