"""Writes to shipments: create and cancel through the sandbox carrier."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models.functions import Now

from shipping import carrier
from shipping.models import Shipment, ShipmentStatus


@transaction.atomic
def shipment_create(
    *, idempotency_key: str, saga_id: UUID, reference: str, address: dict[str, Any]
) -> Shipment:
    """Book a shipment once per key; a repeated call returns the same shipment."""
    existing = Shipment.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    tracking = carrier.book(key=idempotency_key, country=address["country"])
    return Shipment.objects.create(
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
