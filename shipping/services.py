"""Writes to shipments: create and cancel through the sandbox carrier."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models.functions import Now

from config import sql
from shipping import carrier
from shipping.models import Shipment, ShipmentStatus

# Every order's shipment looks its key up first (see ``config.sql``).
_BOOKED = "SELECT id FROM shipping_shipment WHERE idempotency_key = %s"


# No transaction of its own: its one write (the insert, after the provider
# answered) is atomic by itself, and a concurrent call with the same key fails
# on the key's unique constraint as it would inside one. Inside a saga step's
# transaction this saves the savepoint's two round trips on every order.
def shipment_create(
    *, idempotency_key: str, saga_id: UUID, reference: str, address: dict[str, Any]
) -> Shipment:
    """Book a shipment once per key; a repeated call returns the same shipment."""
    existing = sql.fetch(_BOOKED, [idempotency_key])
    if existing:
        return Shipment.objects.get(pk=existing[0][0])
    tracking = carrier.book(key=idempotency_key, country=address["country"])
    return sql.create(
        Shipment,
        idempotency_key=idempotency_key,
        saga_id=saga_id,
        reference=reference,
        address=address,
        country=address["country"],
        status=ShipmentStatus.CREATED,
        tracking_number=tracking,
    )


@transaction.atomic
def shipment_cancel(*, booking_key: str) -> Shipment | None:
    """Cancel the shipment booked with ``booking_key``; safe to call again."""
    shipment = (
        Shipment.objects.select_for_update().filter(idempotency_key=booking_key).first()
    )
    carrier.cancel(key=booking_key)
    if shipment is not None and shipment.status == ShipmentStatus.CREATED:
        shipment.status = ShipmentStatus.CANCELLED
        shipment.cancelled_at = Now()  # type: ignore[assignment]
        shipment.save(update_fields=["status", "cancelled_at"])
    return shipment
