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

from orders.models import Order, OrderLine, OrderStatus

log = structlog.get_logger("orders")

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
    # The order (locked) with its lines, in one query. A delivery running
    # beside this one waits for the lock, then finds the email sent.
    rows = list(
        OrderLine.objects.select_related("order")
        .select_for_update(of=("order",))
        .filter(
            order_id=order_id,
            order__confirmation_queued_at__isnull=False,
            order__confirmation_sent_at__isnull=True,
        )
    )
    if not rows:
        return False
    order = rows[0].order
    lines = "\n".join(f"  {line.quantity} x {line.sku}" for line in rows)
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
