from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class PaymentStatus(models.TextChoices):
    # Money taken from the customer.
    CAPTURED = "captured", "Captured"
    # Money given back by a compensation.
    REFUNDED = "refunded", "Refunded"


class Payment(models.Model):
    idempotency_key = models.CharField(max_length=200, unique=True)
    saga_id = models.UUIDField(db_index=True)
    reference = models.CharField(max_length=200, db_index=True)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="EUR")
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    gateway_charge_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(db_default=Now())
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.reference}: {self.amount_cents} {self.currency} ({self.status})"


# --- the sandbox gateway's own books ------------------------------------------
# ``sandbox_provider`` routes these to the sandbox connection (config.routers):
# they commit on their own, like a payment provider's, whatever the caller's
# transaction does afterwards.


class GatewayChargeStatus(models.TextChoices):
    # Request received, not yet processed.
    PENDING = "pending", "Pending"
    # Funds captured.
    CAPTURED = "captured", "Captured"
    # Captured, then refunded in full.
    REFUNDED = "refunded", "Refunded"
    # Card declined; nothing captured.
    DECLINED = "declined", "Declined"
    # Processing error seen; nothing captured yet.
    ERRORED = "errored", "Errored"
    # Refunded before any capture: a late charge with this key is refused.
    VOIDED = "voided", "Voided"


class GatewayCharge(models.Model):
    sandbox_provider = True

    key = models.CharField(max_length=200, unique=True)
    token = models.CharField(max_length=100)
    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=GatewayChargeStatus.choices)
    processing_errors = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"charge {self.key} ({self.status})"


class GatewayLedgerEntry(models.Model):
    """Money movements at the gateway: + for a capture, - for a refund."""

    sandbox_provider = True

    charge = models.ForeignKey(
        GatewayCharge, on_delete=models.PROTECT, related_name="+"
    )
    amount_cents = models.IntegerField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "gateway ledger entries"

    def __str__(self) -> str:
        return f"{self.amount_cents:+d} for {self.charge_id}"


class GatewayFault(models.Model):
    """A fault injected into the sandbox gateway, for rehearsing failures.

    ``remaining`` failures are left; -1 fails every call until the row is deleted.
    """

    sandbox_provider = True

    operation = models.CharField(
        max_length=16,
        unique=True,
        choices=[("charge", "charge"), ("refund", "refund")],
        help_text="The gateway call that fails.",
    )
    remaining = models.IntegerField(
        default=1,
        help_text="How many more calls fail; -1 fails every call until the row "
        "is deleted.",
    )
    message = models.CharField(
        max_length=200,
        default="gateway unavailable",
        help_text="The error the failing calls raise (a transient one).",
    )

    def __str__(self) -> str:
        return f"{self.operation}: {self.remaining} failures left"
