"""Writes to stock: reserve and release, safe under concurrency and repetition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now

from inventory.models import Product, Reservation, ReservationStatus


class UnknownSku(Exception):
    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = sorted(skus)
        super().__init__(f"unknown SKU: {', '.join(self.skus)}")


class OutOfStock(Exception):
    """Not enough free stock for a reservation."""


@transaction.atomic
def stock_reserve(
    *, saga_id: UUID, items: Iterable[tuple[str, int]]
) -> list[Reservation]:
    """Reserve stock for a saga; reserving again for the same saga changes nothing."""
    existing = list(Reservation.objects.filter(saga_id=saga_id))
    if existing:
        return existing
    wanted: Counter[str] = Counter()
    for sku, quantity in items:
        wanted[sku] += quantity
    # Lock products in primary-key order so concurrent reservations never deadlock.
    products = list(
        Product.objects.select_for_update().filter(sku__in=wanted).order_by("pk")
    )
    missing = set(wanted) - {product.sku for product in products}
    if missing:
        raise UnknownSku(missing)
    short = [p for p in products if p.stock_free < wanted[p.sku]]
    if short:
        raise OutOfStock(
            "; ".join(
                f"{p.sku}: {wanted[p.sku]} requested, {p.stock_free} available"
                for p in short
            )
        )
    for product in products:
        Product.objects.filter(pk=product.pk).update(
            stock_free=F("stock_free") - wanted[product.sku]
        )
    return Reservation.objects.bulk_create(
        Reservation(saga_id=saga_id, product=product, quantity=wanted[product.sku])
        for product in products
    )


@transaction.atomic
def stock_release(*, saga_id: UUID) -> int:
    """Give a saga's reserved stock back; return the units released (0 if none)."""
    reservations = list(
        Reservation.objects.select_for_update()
        .filter(saga_id=saga_id, status=ReservationStatus.RESERVED)
        .order_by("product_id")
    )
    if not reservations:
        return 0
    # Same lock order as stock_reserve: products by primary key.
    list(
        Product.objects.select_for_update()
        .filter(pk__in=[r.product_id for r in reservations])
        .order_by("pk")
    )
    for reservation in reservations:
        Product.objects.filter(pk=reservation.product_id).update(
            stock_free=F("stock_free") + reservation.quantity
        )
    Reservation.objects.filter(pk__in=[r.pk for r in reservations]).update(
        status=ReservationStatus.RELEASED, released_at=Now()
    )
    return sum(r.quantity for r in reservations)


CATALOGUE = (
    ("WIDGET-1", "Widget", 1999),
    ("GADGET-1", "Gadget", 4999),
    ("GIZMO-1", "Gizmo", 999),
)


@transaction.atomic
def catalogue_seed(*, stock: int) -> list[Product]:
    """Create the sandbox catalogue if missing and set each SKU's free stock."""
    products = []
    for sku, name, price in CATALOGUE:
        product, _ = Product.objects.update_or_create(
            sku=sku, defaults={"name": name, "price_cents": price, "stock_free": stock}
        )
        products.append(product)
    return products
