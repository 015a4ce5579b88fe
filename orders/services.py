"""Checkout: create an order and start its flow (the order saga or the events)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory.selectors import products_by_sku
from inventory.services import UnknownSku
from orders.choreography import order_flow_start
from orders.models import Order, OrderLine
from orders.sagas import order_saga_start

FlowMode = Literal["orchestration", "choreography", "remote"]
FLOW_MODES: tuple[FlowMode, ...] = ("orchestration", "choreography", "remote")


def flow_mode_default() -> FlowMode:
    """Return the ``ORDERS_FLOW`` setting: how orders run unless a request says."""
    mode = getattr(settings, "ORDERS_FLOW", "orchestration")
    if mode not in FLOW_MODES:
        raise ImproperlyConfigured(f"ORDERS_FLOW must be one of {FLOW_MODES}")
    return mode  # type: ignore[return-value]


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request."""


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


def _fingerprint(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_ttl() -> timedelta:
    """Return how long an Idempotency-Key keeps answering with its first order."""
    return timedelta(seconds=getattr(settings, "ORDERS_IDEMPOTENCY_TTL", 86400))


def checkout(
    *,
    customer_id: str,
    lines: Sequence[LineRequest],
    payment_token: str,
    shipping_address: dict[str, str],
    idempotency_key: str | None = None,
    mode: FlowMode | None = None,
) -> tuple[Order, bool]:
    """Create an order and start its flow in one transaction.

    Return ``(order, created)``; a repeated request from the same customer under
    the same idempotency key, within ``ORDERS_IDEMPOTENCY_TTL``, returns the
    first order with ``created=False``. Keys are scoped per customer: another
    customer's key neither conflicts nor reveals anything.

    ``mode`` picks the orchestrated saga (``remote``: with the warehouse
    participant) or the choreographed flow (default: ``ORDERS_FLOW``).
    """
    mode = mode or flow_mode_default()
    request: dict[str, Any] = {
        "customer_id": customer_id,
        "lines": [[line.sku, line.quantity] for line in lines],
        "payment_token": payment_token,
        "shipping_address": shipping_address,
    }
    if mode == "choreography":
        # Only when not the orchestration: keys stored before modes existed
        # keep matching their requests.
        request["mode"] = mode
    fingerprint = _fingerprint(request)
    if idempotency_key:
        existing = _replay(customer_id, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            order = _create(
                customer_id=customer_id,
                lines=lines,
                payment_token=payment_token,
                shipping_address=shipping_address,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                mode=mode,
            )
    except IntegrityError:
        # A concurrent request with the same key won the race.
        if idempotency_key:
            existing = _replay(customer_id, idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        raise
    return order, True


def _replay(customer_id: str, idempotency_key: str, fingerprint: str) -> Order | None:
    """Return the order this key already made, or None if the key is free.

    An expired key is released (cleared on its order) so it can be used again.
    """
    existing = Order.objects.filter(
        customer_id=customer_id, idempotency_key=idempotency_key
    ).first()
    if existing is None:
        return None
    if existing.created_at < timezone.now() - idempotency_ttl():
        Order.objects.filter(pk=existing.pk, idempotency_key=idempotency_key).update(
            idempotency_key=None
        )
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body"
        )
    return existing


def _create(
    *,
    customer_id: str,
    lines: Sequence[LineRequest],
    payment_token: str,
    shipping_address: dict[str, str],
    idempotency_key: str | None,
    fingerprint: str,
    mode: FlowMode,
) -> Order:
    products = products_by_sku(line.sku for line in lines)
    missing = {line.sku for line in lines} - set(products)
    if missing:
        raise UnknownSku(missing)
    total = sum(products[line.sku].price_cents * line.quantity for line in lines)
    order = Order.objects.create(
        customer_id=customer_id,
        total_cents=total,
        shipping_address=shipping_address,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
    )
    OrderLine.objects.bulk_create(
        OrderLine(
            order=order,
            sku=line.sku,
            quantity=line.quantity,
            unit_price_cents=products[line.sku].price_cents,
        )
        for line in lines
    )
    items = [(line.sku, line.quantity) for line in lines]
    # The token goes to the saga or the flow only, never to the order row; a
    # saga scrubs it once it ends. In choreography the id is the flow's
    # correlation id, the same role.
    if mode == "choreography":
        order.saga_id = order_flow_start(order, items, payment_token=payment_token)
    else:
        order.saga_id = order_saga_start(
            order, items, payment_token=payment_token, remote=mode == "remote"
        )
    order.save(update_fields=["saga_id"])
    return order
