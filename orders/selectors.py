from __future__ import annotations

from uuid import UUID

from orders.models import Order


def order_get(*, order_id: UUID | str) -> Order | None:
    """Return the order or None."""
    return Order.objects.filter(pk=order_id).first()
