"""Shipments and the sandbox carrier's bookings in the admin (view-only)."""

from __future__ import annotations

from uuid import UUID

from django.contrib import admin

from sagas.admin import SagaRecordAdmin, register_related
from sagas.idempotency import saga_id_from_key, saga_prefix
from shipping.models import CarrierBooking, Shipment


@admin.register(Shipment)
class ShipmentAdmin(SagaRecordAdmin):
    list_display = (
        "reference",
        "country",
        "status",
        "tracking_number",
        "created_at",
        "cancelled_at",
        "saga_link",
    )
    list_filter = ("status",)
    search_fields = ("reference__exact", "tracking_number__exact")
    search_help_text = "A saga id, or a reference or tracking number (exact)."
    fields = (
        "reference",
        "status",
        "country",
        "address",
        "tracking_number",
        "saga_link",
        "idempotency_key",
        "created_at",
        "cancelled_at",
    )


@admin.register(CarrierBooking)
class CarrierBookingAdmin(SagaRecordAdmin):
    saga_field = None
    list_display = ("key", "country", "status", "created_at", "saga_link")
    list_filter = ("status",)
    search_fields = ("key__startswith",)
    search_help_text = "The start of a booking key: a saga id finds its bookings."

    def saga_id_for(self, obj: CarrierBooking) -> UUID | None:
        return saga_id_from_key(obj.key)


register_related(Shipment, label="Shipments")
register_related(
    CarrierBooking,
    "key__startswith",
    label="Carrier bookings (sandbox)",
    value=saga_prefix,
)
