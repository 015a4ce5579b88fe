"""Payments and the sandbox gateway's books in the admin.

Payments and the gateway's charges and ledger are view-only records; gateway
faults are the one thing an operator edits here, to rehearse an outage.
"""

from __future__ import annotations

from uuid import UUID

from django.contrib import admin

from payments.models import GatewayCharge, GatewayFault, GatewayLedgerEntry, Payment
from sagas.admin import SagaRecordAdmin, register_related
from sagas.idempotency import saga_id_from_key, saga_prefix


@admin.register(Payment)
class PaymentAdmin(SagaRecordAdmin):
    list_display = (
        "reference",
        "amount",
        "status",
        "created_at",
        "refunded_at",
        "saga_link",
    )
    list_filter = ("status",)
    search_fields = ("reference__exact", "idempotency_key__startswith")
    search_help_text = "A saga id, a reference (exact) or the start of a key."
    fields = (
        "reference",
        "amount",
        "status",
        "saga_link",
        "idempotency_key",
        "gateway_charge_id",
        "created_at",
        "refunded_at",
    )

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, obj: Payment) -> str:
        return f"{obj.amount_cents / 100:.2f} {obj.currency}"


@admin.register(GatewayCharge)
class GatewayChargeAdmin(SagaRecordAdmin):
    saga_field = None
    list_display = (
        "key",
        "token",
        "amount_cents",
        "status",
        "processing_errors",
        "created_at",
        "saga_link",
    )
    list_filter = ("status",)
    search_fields = ("key__startswith",)
    search_help_text = "The start of a charge key: a saga id finds its charges."

    def saga_id_for(self, obj: GatewayCharge) -> UUID | None:
        return saga_id_from_key(obj.key)


@admin.register(GatewayLedgerEntry)
class GatewayLedgerEntryAdmin(SagaRecordAdmin):
    saga_field = None
    list_display = ("id", "charge", "amount_cents", "created_at", "saga_link")
    list_select_related = ("charge",)
    search_fields = ("charge__key__startswith",)
    search_help_text = "The start of a charge key: a saga id finds its entries."

    def saga_id_for(self, obj: GatewayLedgerEntry) -> UUID | None:
        return saga_id_from_key(obj.charge.key)


@admin.register(GatewayFault)
class GatewayFaultAdmin(admin.ModelAdmin):
    list_display = ("operation", "remaining", "message")


register_related(Payment, label="Payments")
register_related(
    GatewayCharge,
    "key__startswith",
    label="Gateway charges (sandbox)",
    value=saga_prefix,
)
