"""Writes the order's flow drives: confirm, fail, hold, and the confirmation email.

The order saga's hooks and steps (``orders/sagas.py``) and the choreographed
flow (``orders/choreography.py``) call these; they start nothing themselves.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import partial
from smtplib import SMTPRecipientsRefused
from uuid import UUID

import structlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from config import sql
from orders.models import Order, OrderStatus

log = structlog.get_logger("orders")

# Orders a parked saga holds, or that an operator's resolution closes, can
# still be confirmed or failed.
_OPEN = (OrderStatus.PENDING, OrderStatus.ON_HOLD)

# What every order's flow sends when it ends well (see ``config.sql``).
_CONFIRM = (
    "UPDATE orders_order SET status = %s, failure_reason = '', updated_at = {now}"
    " WHERE id = %s AND status IN (%s, %s)"
)
_QUEUE = (
    "UPDATE orders_order SET confirmation_queued_at = {now}"
    " WHERE id = %s AND confirmation_queued_at IS NULL RETURNING customer_id"
)
_EXISTS = "SELECT 1 FROM orders_order WHERE id = %s"
# The order (locked) with its lines, in one query. A delivery running beside
# this one waits for the lock, then finds the email sent.
_UNSENT = (
    "SELECT orders_order.customer_id, orders_order.total_cents,"
    " orders_order.currency, orders_orderline.sku, orders_orderline.quantity"
    " FROM orders_order"
    " JOIN orders_orderline ON orders_orderline.order_id = orders_order.id"
    " WHERE orders_order.id = %s"
    " AND orders_order.confirmation_queued_at IS NOT NULL"
    " AND orders_order.confirmation_sent_at IS NULL"
    " ORDER BY orders_orderline.id{lock}"
)
_SENT = "UPDATE orders_order SET confirmation_sent_at = {now} WHERE id = %s"
_UNQUEUE = "UPDATE orders_order SET confirmation_queued_at = NULL WHERE id = %s"


def order_confirm(*, order_id: UUID | str) -> None:
    """Mark the order confirmed (its saga completed)."""
    sql.execute(
        _CONFIRM.format(now=sql.now()),
        [OrderStatus.CONFIRMED, sql.value(Order, "id", order_id), *_OPEN],
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
    pk = sql.value(Order, "id", order_id)
    queued = sql.fetch(_QUEUE.format(now=sql.now()), [pk])
    if not queued:
        if not sql.fetch(_EXISTS, [pk]):
            raise Order.DoesNotExist(f"no order {order_id}")
        return ConfirmationOutcome.ALREADY_SENT
    try:
        validate_email(confirmation_address(queued[0][0]))
    except ValidationError:
        # Queued and taken back in this transaction: nothing is ever sent.
        sql.execute(_UNQUEUE, [pk])
        return ConfirmationOutcome.UNDELIVERABLE
    transaction.on_commit(
        partial(order_deliver_confirmation, order_id=order_id), robust=True
    )
    return ConfirmationOutcome.SENT


@transaction.atomic
def order_deliver_confirmation(*, order_id: UUID | str) -> bool:
    """Email a queued confirmation once; return False if it was sent already."""
    pk = sql.value(Order, "id", order_id)
    rows = sql.fetch(_UNSENT.format(lock=sql.lock(of="orders_order")), [pk])
    if not rows:
        return False
    customer_id, total_cents, currency = rows[0][:3]
    lines = "\n".join(f"  {quantity} x {sku}" for *_, sku, quantity in rows)
    try:
        send_mail(
            subject=f"Order {UUID(str(order_id))} confirmed",
            message=(
                f"Thank you for your order.\n\n{lines}\n\n"
                f"Total: {total_cents / 100:.2f} {currency}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[confirmation_address(customer_id)],
        )
    except SMTPRecipientsRefused:
        # The mail server refused the recipient for good: stop trying. Other
        # SMTP errors (connection lost, server busy) propagate, and
        # ``confirmations_deliver`` tries again later.
        log.warning("order.confirmation_undeliverable", order_id=str(order_id))
        sql.execute(_UNQUEUE, [pk])
        return False
    sql.execute(_SENT.format(now=sql.now()), [pk])
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
