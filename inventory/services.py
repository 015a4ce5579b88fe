"""Writes to stock: reserve and release, safe under concurrency and repetition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import NoReturn
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now

from config import sql
from inventory.models import Product, Reservation, ReservationStatus


class UnknownSku(Exception):
    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = sorted(skus)
        super().__init__(f"unknown SKU: {', '.join(self.skus)}")


class OutOfStock(Exception):
    """Not enough free stock for a reservation."""


# Every order's reservation, so written once (see ``config.sql``).
_HELD = (
    "SELECT count(*), coalesce(sum(quantity), 0) FROM inventory_reservation"
    " WHERE saga_id = %s"
)
# Take stock only if enough is free: the row lock, check and decrement at once.
_TAKE = (
    "UPDATE inventory_product SET stock_free = stock_free - %s"
    " WHERE sku = %s AND stock_free >= %s"
)
_HOLD = (
    "INSERT INTO inventory_reservation (saga_id, product_id, quantity, status)"
    " SELECT %s, id, %s, %s FROM inventory_product WHERE sku = %s"
)


@transaction.atomic
def stock_reserve(*, saga_id: UUID, items: Iterable[tuple[str, int]]) -> int:
    """Reserve stock for a saga; return the units it holds.

    Reserving again for the same saga changes nothing and returns the same.
    """
    saga = sql.value(Reservation, "saga_id", saga_id)
    [(held, units)] = sql.fetch(_HELD, [saga])
    if held:
        return int(units)
    wanted: Counter[str] = Counter()
    for sku, quantity in items:
        wanted[sku] += quantity
    # Products are locked in SKU order (as stock_release does) so concurrent
    # reservations never deadlock.
    for sku in sorted(wanted):
        if not sql.execute(_TAKE, [wanted[sku], sku, wanted[sku]]):
            _refuse(wanted, taken=[s for s in sorted(wanted) if s < sku])
        sql.execute(_HOLD, [saga, wanted[sku], ReservationStatus.RESERVED, sku])
    return sum(wanted.values())


def _refuse(wanted: Counter[str], *, taken: list[str]) -> NoReturn:
    """Raise why ``wanted`` cannot be reserved (``taken`` were, in this transaction).

    The caller's transaction (``stock_reserve``'s savepoint) rolls them back.
    """
    free = dict(Product.objects.filter(sku__in=wanted).values_list("sku", "stock_free"))
    missing = set(wanted) - set(free)
    if missing:
        raise UnknownSku(missing)
    for sku in taken:
        free[sku] += wanted[sku]
    raise OutOfStock(
        "; ".join(
            f"{sku}: {wanted[sku]} requested, {free[sku]} available"
            for sku in sorted(wanted)
            if free[sku] < wanted[sku]
        )
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
    # Same lock order as stock_reserve: products by SKU.
    list(
        Product.objects.select_for_update()
        .filter(pk__in=[r.product_id for r in reservations])
        .order_by("sku")
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
