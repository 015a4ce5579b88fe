"""Products and reservations in the admin.

Stock levels change only through ``inventory.services`` (reserve, release,
``seed_catalog``), so the admin shows them without letting anyone edit them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inventory.models import Product, Reservation
from sagas.admin import SagaRecordAdmin, register_related


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "stock_free")
    search_fields = ("sku__startswith", "name__exact")
    search_help_text = "The start of a SKU, or a product name (exact)."
    fields = ("sku", "name", "price_cents", "stock_free")

    def get_readonly_fields(
        self, request: HttpRequest, obj: Product | None = None
    ) -> tuple[str, ...]:
        # A SKU is referenced by order lines: it is fixed once created.
        return ("sku", "stock_free") if obj is not None else ("stock_free",)

    @admin.display(description="price", ordering="price_cents")
    def price(self, obj: Product) -> str:
        return f"{obj.price_cents / 100:.2f}"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(SagaRecordAdmin):
    list_display = (
        "id",
        "product",
        "quantity",
        "status",
        "created_at",
        "released_at",
        "saga_link",
    )
    list_filter = ("status",)
    list_select_related = ("product",)
    search_fields = ("product__sku__exact",)
    search_help_text = "A saga id, or a SKU (exact)."
    fields = (
        "product",
        "quantity",
        "status",
        "saga_link",
        "created_at",
        "released_at",
    )


register_related(Reservation, label="Stock reservations")
