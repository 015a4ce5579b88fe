"""Writes to payments: charge and refund through the sandbox gateway."""

from __future__ import annotations

from uuid import UUID

from django.db import transaction
from django.db.models.functions import Now

from config import sql
from payments import gateway
from payments.models import Payment, PaymentStatus

# Every order's charge looks its key up first (see ``config.sql``).
_CHARGED = "SELECT id FROM payments_payment WHERE idempotency_key = %s"


# No transaction of its own: its one write (the insert, after the provider
# answered) is atomic by itself, and a concurrent call with the same key fails
# on the key's unique constraint as it would inside one. Inside a saga step's
# transaction this saves the savepoint's two round trips on every order.
def payment_charge(
    *,
    idempotency_key: str,
    saga_id: UUID,
    reference: str,
    amount_cents: int,
    token: str,
) -> Payment:
    """Charge the customer once per key; a repeated call returns the same payment."""
    existing = sql.fetch(_CHARGED, [idempotency_key])
    if existing:
        return Payment.objects.get(pk=existing[0][0])
    charge_id = gateway.charge(
        key=idempotency_key, token=token, amount_cents=amount_cents
    )
    return sql.create(
        Payment,
        idempotency_key=idempotency_key,
        saga_id=saga_id,
        reference=reference,
        amount_cents=amount_cents,
        status=PaymentStatus.CAPTURED,
        gateway_charge_id=charge_id,
    )


@transaction.atomic
def payment_refund(*, charge_key: str) -> Payment | None:
    """Refund the payment charged with ``charge_key``; safe to call again.

    Also safe when the charge never happened or is still in flight: the gateway
    voids the key so a late charge cannot capture.
    """
    payment = (
        Payment.objects.select_for_update().filter(idempotency_key=charge_key).first()
    )
    gateway.refund(key=charge_key)
    if payment is not None and payment.status == PaymentStatus.CAPTURED:
        payment.status = PaymentStatus.REFUNDED
        payment.refunded_at = Now()  # type: ignore[assignment]
        payment.save(update_fields=["status", "refunded_at"])
    return payment
