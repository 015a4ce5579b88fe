"""The order saga: the one place that wires the domain apps together.

reserve stock -> charge payment -> create shipment -> send confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from uuid import UUID

from inventory.services import OutOfStock, UnknownSku, stock_release, stock_reserve
from orders.models import Order
from orders.outcomes import (
    order_confirm,
    order_fail,
    order_hold,
    order_send_confirmation,
)
from payments.gateway import CardDeclined, ChargeVoided, GatewayUnavailable
from payments.services import payment_charge, payment_refund
from sagas.definition import (
    Remote,
    RetryPolicy,
    SagaDefinition,
    SagaOutcome,
    Step,
    StepContext,
    StepKind,
)
from sagas.engine import saga_start
from sagas.errors import PermanentError, TransientError
from sagas.registry import register
from shipping.carrier import BookingVoided, UnsupportedDestination
from shipping.services import shipment_cancel, shipment_create

# --- steps --------------------------------------------------------------------


def reserve_stock(ctx: StepContext) -> Mapping[str, Any]:
    try:
        units = stock_reserve(
            saga_id=ctx.saga_id, items=[(sku, qty) for sku, qty in ctx.data["items"]]
        )
    except (OutOfStock, UnknownSku) as exc:
        raise PermanentError(f"Out of stock: {exc}") from exc
    return {"reserved_units": units}


def release_stock(ctx: StepContext) -> None:
    stock_release(saga_id=ctx.saga_id)


def charge_payment(ctx: StepContext) -> Mapping[str, Any]:
    try:
        payment = payment_charge(
            idempotency_key=ctx.idempotency_key,
            saga_id=ctx.saga_id,
            reference=ctx.business_key,
            amount_cents=ctx.data["amount_cents"],
            token=ctx.data["payment_token"],
        )
    except (CardDeclined, ChargeVoided) as exc:
        raise PermanentError(f"Payment declined: {exc}") from exc
    except GatewayUnavailable as exc:
        raise TransientError(f"Payment gateway: {exc}") from exc
    return {"payment_id": payment.pk}


def refund_payment(ctx: StepContext) -> None:
    try:
        payment_refund(charge_key=ctx.action_key)
    except GatewayUnavailable as exc:
        raise TransientError(f"Payment gateway: {exc}") from exc


def create_shipment(ctx: StepContext) -> Mapping[str, Any]:
    try:
        shipment = shipment_create(
            idempotency_key=ctx.idempotency_key,
            saga_id=ctx.saga_id,
            reference=ctx.business_key,
            address=ctx.data["shipping_address"],
        )
    except (UnsupportedDestination, BookingVoided) as exc:
        raise PermanentError(f"Cannot ship: {exc}") from exc
    return {"tracking_number": shipment.tracking_number}


def cancel_shipment(ctx: StepContext) -> None:
    shipment_cancel(booking_key=ctx.action_key)


def send_confirmation(ctx: StepContext) -> Mapping[str, Any]:
    # Recorded in the attempt's result and the context: an undeliverable
    # address ends the step, the saga still completes.
    return {"confirmation": order_send_confirmation(order_id=ctx.data["order_id"])}


# --- outcome hooks (run in the engine's transaction) ----------------------------


def _completed(outcome: SagaOutcome) -> None:
    order_confirm(order_id=outcome.data["order_id"])


def _compensated(outcome: SagaOutcome) -> None:
    order_fail(order_id=outcome.data["order_id"], reason=outcome.error)


def _failed(outcome: SagaOutcome) -> None:
    order_hold(
        order_id=outcome.data["order_id"],
        reason="We are looking into a problem with this order.",
    )


def _resolved(outcome: SagaOutcome) -> None:
    # Parked while undoing: the operator finished giving everything back.
    # Parked going forward (past the charge): the order was fulfilled.
    if outcome.compensating:
        order_fail(
            order_id=outcome.data["order_id"],
            reason=outcome.error or f"Cancelled: {outcome.note}",
        )
    else:
        order_confirm(order_id=outcome.data["order_id"])


ORDER_SAGA = register(
    SagaDefinition(
        name="order_checkout",
        version=1,
        steps=(
            Step(
                "reserve_stock", reserve_stock, compensation=release_stock, timeout=30
            ),
            Step(
                "charge_payment",
                charge_payment,
                compensation=refund_payment,
                timeout=30,
                retry=RetryPolicy(max_attempts=4, backoff=0.5),
            ),
            Step(
                "create_shipment",
                create_shipment,
                compensation=cancel_shipment,
                timeout=30,
            ),
            Step(
                "send_confirmation",
                send_confirmation,
                kind=StepKind.RETRIABLE,
                timeout=30,
                retry=RetryPolicy(max_attempts=None, backoff=1.0, max_backoff=600),
            ),
        ),
        on_completed=_completed,
        on_compensated=_compensated,
        sensitive=("payment_token",),
        on_failed=_failed,
        on_resolved=_resolved,
    )
)


def _items(ctx: StepContext) -> Mapping[str, Any]:
    return {"items": ctx.data["items"]}


# The same order, with the stock kept by the warehouse service: a participant
# in its own process and database, driven by command and reply.
ORDER_SAGA_REMOTE = register(
    replace(
        ORDER_SAGA,
        name="order_checkout_remote",
        steps=(
            Step(
                "reserve_stock",
                Remote("warehouse.reserve", queue="warehouse", payload=_items),
                compensation=Remote("warehouse.release", queue="warehouse"),
                timeout=30,
            ),
            *ORDER_SAGA.steps[1:],
        ),
    )
)


def order_saga_start(
    order: Order,
    items: list[tuple[str, int]],
    *,
    payment_token: str,
    remote: bool = False,
) -> UUID:
    """Start the saga for a new order; call inside the transaction creating it.

    ``remote``: the variant whose stock the warehouse participant keeps.
    """
    saga = saga_start(
        ORDER_SAGA_REMOTE if remote else ORDER_SAGA,
        business_key=f"order:{order.pk}",
        context={
            "order_id": str(order.pk),
            "items": [[sku, qty] for sku, qty in items],
            "amount_cents": order.total_cents,
            "payment_token": payment_token,
            "shipping_address": order.shipping_address,
        },
    )
    return saga.pk
