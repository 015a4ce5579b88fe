"""HTTP API for guest checkout and order tracking."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import pycountry
from django.http import HttpRequest, HttpResponse
from ninja import Field, Header, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, StrictInt, field_validator

from inventory.services import UnknownSku
from orders.selectors import order_get
from orders.services import FlowMode, IdempotencyConflict, LineRequest, checkout
from sagas.events.selectors import flow_summary
from sagas.selectors import saga_summary

router = Router(tags=["orders"])


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ItemIn(_Strict):
    sku: str = Field(min_length=1, max_length=64)
    quantity: StrictInt = Field(ge=1, le=1000)


class AddressIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")

    @field_validator("country")
    @classmethod
    def _iso_country(cls, value: str) -> str:
        if pycountry.countries.get(alpha_2=value.upper()) is None:
            raise ValueError("not an ISO 3166-1 alpha-2 country code")
        return value.upper()


class OrderIn(_Strict):
    customer_id: str = Field(min_length=1, max_length=100)
    items: list[ItemIn] = Field(min_length=1, max_length=50)
    payment_token: str = Field(min_length=1, max_length=100)
    shipping_address: AddressIn
    mode: FlowMode | None = Field(
        None,
        description=(
            "How the order runs: `orchestration` (the order saga) or "
            "`choreography` (services reacting to events). Default: the "
            "`X-Saga-Mode` header, else the server's `ORDERS_FLOW` setting."
        ),
    )


class FlowEventOut(Schema):
    event_type: str
    event_id: UUID
    occurred_at: datetime


class StepOut(Schema):
    name: str
    status: str
    attempts: int
    compensation: str
    compensation_attempts: int


class OrderOut(Schema):
    id: UUID
    status: Literal["pending", "confirmed", "failed", "on_hold"]
    failure_reason: str
    total_cents: int
    currency: str
    mode: FlowMode
    saga_id: UUID | None = Field(
        description="The saga's id, or in choreography the flow's correlation id."
    )
    saga_status: str | None
    steps: list[StepOut]
    events: list[FlowEventOut] = Field(
        description="In choreography, the flow's events as the tracker saw them."
    )


class ErrorOut(Schema):
    detail: str
    errors: list[dict[str, Any]] = []


def _order_out(order: Any) -> dict[str, Any]:
    summary = saga_summary(order.saga_id) if order.saga_id else None
    flow = flow_summary(order.saga_id) if order.saga_id and not summary else None
    mode = "orchestration" if summary or not order.saga_id else "choreography"
    status = (summary or flow or {}).get("status")
    return {
        "id": order.pk,
        "status": order.status,
        "failure_reason": order.failure_reason,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "mode": mode,
        "saga_id": order.saga_id,
        "saga_status": status,
        "steps": summary["steps"] if summary else [],
        "events": flow["events"] if flow else [],
    }


@router.post(
    "/",
    response={202: OrderOut, 400: ErrorOut, 409: ErrorOut},
    url_name="order-create",
)
def create_order(
    request: HttpRequest,
    response: HttpResponse,
    payload: OrderIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
    # ninja reads parameters from their defaults (B008 does not apply).
    saga_mode: FlowMode | None = Header(  # noqa: B008
        None,
        alias="X-Saga-Mode",
        description="`orchestration` or `choreography`; the body's `mode` wins.",
    ),
) -> Status[dict[str, Any]]:
    """Place a guest order; it is fulfilled asynchronously by the order saga,
    or by the choreographed flow of events (``mode``)."""
    try:
        order, created = checkout(
            customer_id=payload.customer_id,
            lines=[LineRequest(sku=i.sku, quantity=i.quantity) for i in payload.items],
            payment_token=payload.payment_token,
            shipping_address=payload.shipping_address.model_dump(),
            idempotency_key=idempotency_key or None,
            mode=payload.mode or saga_mode,
        )
    except UnknownSku as exc:
        return Status(
            400,
            {
                "detail": str(exc),
                "errors": [{"field": "items", "message": str(exc), "skus": exc.skus}],
            },
        )
    except IdempotencyConflict as exc:
        return Status(
            409,
            {
                "detail": str(exc),
                "errors": [{"field": "Idempotency-Key", "message": str(exc)}],
            },
        )
    if not created:
        response["Idempotent-Replayed"] = "true"
    return Status(202, _order_out(order))


@router.get("/{uuid:order_id}/", response=OrderOut, url_name="order-detail")
def get_order(request: HttpRequest, order_id: UUID) -> dict[str, Any]:
    """Return an order with its saga's progress."""
    order = order_get(order_id=order_id)
    if order is None:
        raise HttpError(404, "order not found")
    return _order_out(order)
