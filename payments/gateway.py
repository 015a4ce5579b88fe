"""The sandbox payment gateway.

Tokens behave as documented: ``tok_visa`` succeeds, ``tok_chargeDeclined`` is a
permanent decline, ``tok_processingError`` fails transiently on its first attempt
and succeeds on the next. Charges and refunds are idempotent by key, and a refund
that arrives before its charge voids the key, so a late charge cannot capture.
"""

from __future__ import annotations

from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.db.models.functions import Now

from config import sql
from config.routers import SANDBOX_ALIAS
from config.sandbox import insert_new, network_latency
from payments.models import (
    GatewayCharge,
    GatewayChargeStatus,
    GatewayFault,
    GatewayLedgerEntry,
)

TOKEN_OK = "tok_visa"
TOKEN_DECLINED = "tok_chargeDeclined"
TOKEN_PROCESSING_ERROR = "tok_processingError"
KNOWN_TOKENS = frozenset({TOKEN_OK, TOKEN_DECLINED, TOKEN_PROCESSING_ERROR})


class GatewayError(Exception):
    """Base class for gateway answers other than success."""


class CardDeclined(GatewayError):
    """Permanent: the issuer refused the charge."""


class ChargeVoided(GatewayError):
    """Permanent: the key was refunded before it was ever charged."""


class GatewayUnavailable(GatewayError):
    """Transient: try again later."""


# Every call checks for an injected fault (see ``config.sql``).
_FAULTED = (
    "SELECT 1 FROM payments_gatewayfault WHERE operation = %s AND remaining <> 0"
    " LIMIT 1"
)


def _fault(operation: str) -> None:
    """Raise GatewayUnavailable if a fault is injected for ``operation``."""
    # Nearly every call finds none: one read, without a transaction, says so.
    if not sql.fetch(_FAULTED, [operation], using=SANDBOX_ALIAS):
        return
    faults = GatewayFault.objects.filter(operation=operation).exclude(remaining=0)
    with transaction.atomic(using=SANDBOX_ALIAS):
        fault = faults.select_for_update().first()
        if fault is None:
            return
        if fault.remaining > 0:
            GatewayFault.objects.filter(pk=fault.pk).update(
                remaining=F("remaining") - 1
            )
    raise GatewayUnavailable(fault.message)


def charge(*, key: str, token: str, amount_cents: int) -> str:
    """Capture ``amount_cents``; return the charge id. Same key, same charge."""
    network_latency()
    status: str = _outcome(token, processing_errors=0)
    pk = _charge_new(key=key, token=token, amount_cents=amount_cents, status=status)
    if pk is None:
        _fault("charge")
        with transaction.atomic(using=SANDBOX_ALIAS):
            # The gateway's record of the call. The first call with a key
            # decides it at once; a repeated one (or a concurrent one, which
            # waits for the first to commit) reads the record and finishes
            # what is left to do.
            pk = insert_new(
                GatewayCharge,
                "key",
                key=key,
                token=token,
                amount_cents=amount_cents,
                status=status,
                processing_errors=int(status == GatewayChargeStatus.ERRORED),
            )
            if pk is None:
                row = GatewayCharge.objects.select_for_update().get(key=key)
                pk = row.pk
                status = _settle(row, token=token, amount_cents=amount_cents)
            elif status == GatewayChargeStatus.CAPTURED:
                sql.insert(
                    GatewayLedgerEntry,
                    using=SANDBOX_ALIAS,
                    returning=(),
                    charge_id=pk,
                    amount_cents=amount_cents,
                )
    # Raised after the block so the gateway's own record of the call commits.
    if status in (GatewayChargeStatus.CAPTURED, GatewayChargeStatus.REFUNDED):
        return f"ch_{pk}"
    if status == GatewayChargeStatus.VOIDED:
        raise ChargeVoided("this payment was cancelled before it was captured")
    if status == GatewayChargeStatus.ERRORED:
        raise GatewayUnavailable("processing error, please retry")
    raise CardDeclined("the card was declined")


# A new key's charge on PostgreSQL: the fault check, the charge and its ledger
# entry in one statement, as every order's first call is.
_CHARGE_NEW = """
WITH fault AS (
    SELECT 1 FROM payments_gatewayfault
    WHERE operation = 'charge' AND remaining <> 0 LIMIT 1
), charged AS (
    INSERT INTO payments_gatewaycharge
        ("key", token, amount_cents, status, processing_errors)
    SELECT %s::text, %s::text, %s::integer, %s::text, %s::integer
    WHERE NOT EXISTS (SELECT 1 FROM fault)
    ON CONFLICT ("key") DO NOTHING
    RETURNING id
), ledger AS (
    INSERT INTO payments_gatewayledgerentry (charge_id, amount_cents)
    SELECT id, %s::integer FROM charged WHERE %s::boolean
)
SELECT id FROM charged"""


def _charge_new(*, key: str, token: str, amount_cents: int, status: str) -> int | None:
    """Record a new key's charge in one statement; return its id.

    None where that cannot settle it: a fault is injected, the key was used
    before, or the database is not PostgreSQL. The caller then goes the
    general way.
    """
    if connections[SANDBOX_ALIAS].vendor != "postgresql":
        return None
    errors = int(status == GatewayChargeStatus.ERRORED)
    captured = status == GatewayChargeStatus.CAPTURED
    rows = sql.fetch(
        _CHARGE_NEW,
        [key, token, amount_cents, status, errors, amount_cents, captured],
        using=SANDBOX_ALIAS,
    )
    return int(rows[0][0]) if rows else None


def _outcome(token: str, *, processing_errors: int) -> GatewayChargeStatus:
    """What a charge attempt with ``token`` ends as."""
    if token not in KNOWN_TOKENS or token == TOKEN_DECLINED:
        return GatewayChargeStatus.DECLINED
    if token == TOKEN_PROCESSING_ERROR and processing_errors == 0:
        return GatewayChargeStatus.ERRORED
    return GatewayChargeStatus.CAPTURED


def _settle(row: GatewayCharge, *, token: str, amount_cents: int) -> str:
    """Finish a charge recorded before (locked); return the status it ends in."""
    if row.status in (
        GatewayChargeStatus.CAPTURED,
        GatewayChargeStatus.REFUNDED,
        GatewayChargeStatus.VOIDED,
    ):
        return row.status
    status = _outcome(token, processing_errors=row.processing_errors)
    if status == GatewayChargeStatus.DECLINED:
        GatewayCharge.objects.filter(pk=row.pk).update(status=status)
    elif status == GatewayChargeStatus.ERRORED:
        GatewayCharge.objects.filter(pk=row.pk).update(
            processing_errors=1, status=status
        )
    else:
        GatewayCharge.objects.filter(pk=row.pk).update(
            status=status, amount_cents=amount_cents, updated_at=Now()
        )
        GatewayLedgerEntry.objects.create(charge=row, amount_cents=amount_cents)
    return status


def refund(*, key: str) -> int:
    """Refund the charge made with ``key``; return the amount refunded (0: none)."""
    network_latency()
    _fault("refund")
    with transaction.atomic(using=SANDBOX_ALIAS):
        row = GatewayCharge.objects.select_for_update().filter(key=key).first()
        if row is None:
            try:
                with transaction.atomic(using=SANDBOX_ALIAS):
                    GatewayCharge.objects.create(
                        key=key,
                        token="",
                        amount_cents=0,
                        status=GatewayChargeStatus.VOIDED,
                    )
            except IntegrityError:
                return refund(key=key)
            return 0
        if row.status == GatewayChargeStatus.CAPTURED:
            GatewayCharge.objects.filter(pk=row.pk).update(
                status=GatewayChargeStatus.REFUNDED, updated_at=Now()
            )
            GatewayLedgerEntry.objects.create(
                charge=row, amount_cents=-row.amount_cents
            )
            return row.amount_cents
        if row.status in (
            GatewayChargeStatus.PENDING,
            GatewayChargeStatus.ERRORED,
            GatewayChargeStatus.DECLINED,
        ):
            GatewayCharge.objects.filter(pk=row.pk).update(
                status=GatewayChargeStatus.VOIDED, updated_at=Now()
            )
        return 0
