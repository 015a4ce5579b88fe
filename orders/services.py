"""Writes to orders: checkout, and the status changes the order saga drives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial
from smtplib import SMTPRecipientsRefused
from typing import Any, Literal
from uuid import UUID

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from inventory.selectors import products_by_sku
from inventory.services import UnknownSku
from orders.models import Order, OrderLine, OrderStatus

log = structlog.get_logger("orders")

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
    from orders.choreography import order_flow_start
    from orders.sagas import order_saga_start

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


# Orders a parked saga holds, or that an operator's resolution closes, can
# still be confirmed or failed.
_OPEN = (OrderStatus.PENDING, OrderStatus.ON_HOLD)


def order_confirm(*, order_id: UUID | str) -> None:
    """Mark the order confirmed (its saga completed)."""
    Order.objects.filter(pk=order_id, status__in=_OPEN).update(
        status=OrderStatus.CONFIRMED, failure_reason="", updated_at=Now()
    )


def order_fail(*, order_id: UUID | str, reason: str) -> None:
    """Mark the order failed with a reason the customer can read."""
    Order.objects.filter(pk=order_id, status__in=_OPEN).update(
        status=OrderStatus.FAILED, failure_reason=reason, updated_at=Now()
    )


def order_note_failure(*, order_id: UUID | str, reason: str) -> None:
    """Keep the first reason a still-pending order is failing for.

    In the choreographed flow the reason arrives with the failure event, and
    the order fails only once the compensations it triggered are done.
    """
    Order.objects.filter(
        pk=order_id, status=OrderStatus.PENDING, failure_reason=""
    ).update(failure_reason=reason, updated_at=Now())


def order_hold(*, order_id: UUID | str, reason: str) -> None:
    """Put the order on hold while an operator looks at its parked saga."""
    Order.objects.filter(pk=order_id, status=OrderStatus.PENDING).update(
        status=OrderStatus.ON_HOLD, failure_reason=reason, updated_at=Now()
    )


class ConfirmationOutcome(StrEnum):
    # Queued: the email leaves once the confirmation step commits.
    SENT = "sent"
    # It had been queued before (a repeated step).
    ALREADY_SENT = "already_sent"
    # The customer's address cannot receive mail: nothing to retry.
    UNDELIVERABLE = "undeliverable"


def confirmation_address(customer_id: str) -> str:
    """Return the address the confirmation of ``customer_id``'s orders goes to."""
    return f"{customer_id}@customers.example.com"


def order_send_confirmation(*, order_id: UUID | str) -> ConfirmationOutcome:
    """Queue the order confirmation; it is emailed once the caller commits.

    Emailing inside the step's transaction would send it again whenever that
    transaction rolls back after the send and the step is retried. An address
    that cannot receive mail is an outcome, not an error: retrying cannot fix
    it, and the order is paid and shipped all the same.
    """
    order = Order.objects.only("customer_id").get(pk=order_id)
    try:
        validate_email(confirmation_address(order.customer_id))
    except ValidationError:
        return ConfirmationOutcome.UNDELIVERABLE
    queued = Order.objects.filter(
        pk=order_id, confirmation_queued_at__isnull=True
    ).update(confirmation_queued_at=Now())
    if not queued:
        return ConfirmationOutcome.ALREADY_SENT
    transaction.on_commit(
        partial(order_deliver_confirmation, order_id=order_id), robust=True
    )
    return ConfirmationOutcome.SENT


@transaction.atomic
def order_deliver_confirmation(*, order_id: UUID | str) -> bool:
    """Email a queued confirmation once; return False if it was sent already."""
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.confirmation_queued_at is None or order.confirmation_sent_at is not None:
        return False
    lines = "\n".join(f"  {line.quantity} x {line.sku}" for line in order.lines.all())
    try:
        send_mail(
            subject=f"Order {order.id} confirmed",
            message=(
                f"Thank you for your order.\n\n{lines}\n\n"
                f"Total: {order.total_cents / 100:.2f} {order.currency}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[confirmation_address(order.customer_id)],
        )
    except SMTPRecipientsRefused:
        # The mail server refused the recipient for good: stop trying. Other
        # SMTP errors (connection lost, server busy) propagate, and
        # ``confirmations_deliver`` tries again later.
        log.warning("order.confirmation_undeliverable", order_id=str(order.pk))
        order.confirmation_queued_at = None
        order.save(update_fields=["confirmation_queued_at"])
        return False
    order.confirmation_sent_at = Now()  # type: ignore[assignment]
    order.save(update_fields=["confirmation_sent_at"])
    return True


def confirmations_deliver(*, older_than: float = 60.0) -> int:
    """Email confirmations queued over ``older_than`` seconds ago and never sent.

    They were committed, but the process died before emailing them.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than)
    pending = Order.objects.filter(
        confirmation_queued_at__lt=cutoff, confirmation_sent_at__isnull=True
    ).values_list("pk", flat=True)
    return sum(order_deliver_confirmation(order_id=pk) for pk in list(pending[:500]))
