from __future__ import annotations

from collections.abc import Iterable

from inventory.models import Product


def products_by_sku(skus: Iterable[str]) -> dict[str, Product]:
    """Return the products with the given SKUs, keyed by SKU."""
    return {p.sku: p for p in Product.objects.filter(sku__in=set(skus))}
