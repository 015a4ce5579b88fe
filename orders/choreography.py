"""The order flow by choreography: each service reacts to events, no coordinator.

order.created -> payments charges -> payment.processed | payment.failed;
payment.processed -> inventory reserves -> inventory.reserved |
inventory.reservation.failed (payments answers with a refund);
inventory.reserved -> shipping books -> shipment.created | shipping.failed
(with inventory.release.requested + payment.refund.requested);
the order service settles the order once the flow's outcome is known and
announces it with order.confirmed | order.failed.

Like ``orders/sagas.py`` for the orchestrated flow, this is the one module
that wires the domain services to the events. Every handler runs in its own
transaction with its inbox row, and publishes through the outbox in it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from inventory.services import OutOfStock, UnknownSku, stock_release, stock_reserve
from orders.models import Order, OrderStatus
from orders.outcomes import (
    order_confirm,
    order_fail,
    order_note_failure,
    order_send_confirmation,
)
from payments.gateway import CardDeclined, ChargeVoided
from payments.services import payment_charge, payment_refund
from sagas.events.consumers import handler, seen
from sagas.events.envelope import Event
from sagas.events.flows import register_flow
from sagas.events.outbox import publish
from sagas.idempotency import make_key
from shipping.carrier import BookingVoided, UnsupportedDestination
from shipping.services import shipment_create

ORDER_FLOW = "order_checkout"

register_flow(
    ORDER_FLOW,
    completed={"order.confirmed"},
    compensating={"payment.failed", "inventory.reservation.failed", "shipping.failed"},
    compensated={"order.failed"},
    # Each hop is one handler; two minutes of silence is far past any retry.
    timeout=120,
)


def order_flow_start(
    order: Order, items: list[tuple[str, int]], *, payment_token: str
) -> UUID:
    """Publish ``order.created`` for a new order; call inside its transaction.

    Return the flow's correlation id.
    """
    flow_id = uuid4()
    publish(
        "order.created",
        {
            "order_id": str(order.pk),
            "items": [[sku, qty] for sku, qty in items],
            "amount_cents": order.total_cents,
            "payment_token": payment_token,
            "shipping_address": order.shipping_address,
        },
        correlation_id=flow_id,
        flow_type=ORDER_FLOW,
        flow_key=f"order:{order.pk}",
    )
    return flow_id


def _flow(event: Event) -> UUID:
    if event.correlation_id is None:
        raise ValueError(f"{event.event_type} {event.event_id} has no correlation id")
    return event.correlation_id


def _forward(event: Event, **extra: Any) -> dict[str, Any]:
    # What the services further down the flow need; the card token stays here.
    data = event.payload
    kept = ("order_id", "items", "amount_cents", "shipping_address")
    return {**{k: data[k] for k in kept if k in data}, **extra}


def _charge_key(event: Event) -> str:
    # The same keys as the orchestrated saga's steps.
    return make_key(_flow(event), "charge_payment")


# --- payments -----------------------------------------------------------------


@handler("order.created", consumer="payments")
def charge_for_order(event: Event) -> None:
    """Charge the order; a gateway outage raises, and the delivery is retried."""
    try:
        payment = payment_charge(
            idempotency_key=_charge_key(event),
            saga_id=_flow(event),
            reference=event.flow_key,
            amount_cents=event.payload["amount_cents"],
            token=event.payload["payment_token"],
        )
    except (CardDeclined, ChargeVoided) as exc:
        publish("payment.failed", _forward(event, reason=f"Payment declined: {exc}"))
        return
    publish("payment.processed", _forward(event, payment_id=payment.pk))


@handler("inventory.reservation.failed", consumer="payments")
@handler("payment.refund.requested", consumer="payments")
def refund_for_order(event: Event) -> None:
    """Refund the order's charge; also voids a charge that has not happened yet."""
    payment_refund(charge_key=_charge_key(event))
    publish("payment.refunded", {"order_id": event.payload["order_id"]})


# --- inventory ----------------------------------------------------------------


@handler("payment.processed", consumer="inventory")
def reserve_for_order(event: Event) -> None:
    """Reserve the order's stock, unless its release was already asked for."""
    if "inventory.release.requested" in seen(
        consumer="inventory", correlation_id=_flow(event)
    ):
        # Arrived after its own compensation: reserving now would hold the
        # stock for ever.
        return
    try:
        stock_reserve(
            saga_id=_flow(event),
            items=[(sku, qty) for sku, qty in event.payload["items"]],
        )
    except (OutOfStock, UnknownSku) as exc:
        publish(
            "inventory.reservation.failed",
            _forward(event, reason=f"Out of stock: {exc}"),
        )
        return
    publish("inventory.reserved", _forward(event))


@handler("inventory.release.requested", consumer="inventory")
def release_for_order(event: Event) -> None:
    """Give the order's stock back (nothing to give is fine)."""
    stock_release(saga_id=_flow(event))
    publish("inventory.released", {"order_id": event.payload["order_id"]})


# --- shipping -----------------------------------------------------------------


@handler("inventory.reserved", consumer="shipping")
def ship_order(event: Event) -> None:
    """Book the shipment; when the carrier refuses, ask for everything back."""
    try:
        shipment = shipment_create(
            idempotency_key=make_key(_flow(event), "create_shipment"),
            saga_id=_flow(event),
            reference=event.flow_key,
            address=event.payload["shipping_address"],
        )
    except (UnsupportedDestination, BookingVoided) as exc:
        order_id = event.payload["order_id"]
        reason = f"Cannot ship: {exc}"
        publish("shipping.failed", {"order_id": order_id, "reason": reason})
        publish("inventory.release.requested", {"order_id": order_id})
        publish("payment.refund.requested", {"order_id": order_id})
        return
    publish(
        "shipment.created",
        {"order_id": event.payload["order_id"], "tracking": shipment.tracking_number},
    )


# --- orders -------------------------------------------------------------------

# A failure settles the order only once everything it took is given back.
_FAILED_ONCE: tuple[tuple[str, frozenset[str]], ...] = (
    ("payment.failed", frozenset()),
    ("inventory.reservation.failed", frozenset({"payment.refunded"})),
    ("shipping.failed", frozenset({"payment.refunded", "inventory.released"})),
)
_OUTCOME_EVENTS = (
    "shipment.created",
    "payment.failed",
    "inventory.reservation.failed",
    "shipping.failed",
    "payment.refunded",
    "inventory.released",
)


def _settle(event: Event) -> None:
    """Confirm or fail the order once the flow's outcome is in.

    Events may arrive in any order; the set of events this service has seen
    for the flow decides, and the order's status makes it happen once.
    """
    order_id = event.payload["order_id"]
    if event.payload.get("reason"):
        order_note_failure(order_id=order_id, reason=event.payload["reason"])
    types = seen(consumer="orders", correlation_id=_flow(event)) | {event.event_type}
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.status != OrderStatus.PENDING:
        return
    if "shipment.created" in types:
        order_confirm(order_id=order_id)
        order_send_confirmation(order_id=order_id)
        publish("order.confirmed", {"order_id": order_id})
        return
    for failure, undone in _FAILED_ONCE:
        if failure in types and undone <= types:
            reason = order.failure_reason
            order_fail(order_id=order_id, reason=reason)
            publish("order.failed", {"order_id": order_id, "reason": reason})
            return


for _event_type in _OUTCOME_EVENTS:
    handler(_event_type, consumer="orders")(_settle)
