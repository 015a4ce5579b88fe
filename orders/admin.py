"""Orders in the admin: view-only, each linked to the saga that drives it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from orders.models import Order, OrderLine
from sagas.admin import SagaRecordAdmin, register_related


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    fields = ("sku", "quantity", "unit_price_cents")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(SagaRecordAdmin):
    list_display = (
        "id",
        "customer_id",
        "status",
        "total",
        "created_at",
        "saga_link",
    )
    list_filter = ("status",)
    # Exact lookups use the indexes; an order or saga id (a UUID) matches too.
    search_fields = ("customer_id__exact",)
    search_help_text = "An order id or saga id, or a customer id (exact)."
    fields = (
        "id",
        "status",
        "failure_reason",
        "customer_id",
        "total",
        "shipping_address",
        "saga_link",
        "idempotency_key",
        "confirmation_sent_at",
        "created_at",
        "updated_at",
    )
    inlines = [OrderLineInline]

    @admin.display(description="total", ordering="total_cents")
    def total(self, obj: Order) -> str:
        return f"{obj.total_cents / 100:.2f} {obj.currency}"


register_related(Order, label="Orders")
