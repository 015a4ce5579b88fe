"""HTTP API for guest checkout and order tracking."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import pycountry
from django.http import HttpRequest, HttpResponse
from ninja import Field, Header, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, field_validator

from inventory.services import UnknownSku
from orders.selectors import order_get
from orders.services import FlowMode, IdempotencyConflict, LineRequest, checkout
from orders.throttling import CheckoutThrottle
from sagas.api import StepOut
from sagas.events.selectors import flow_summary
from sagas.selectors import saga_summary

router = Router(tags=["orders"])


class _Strict(Schema):
    # No whitespace stripping: a value is accepted exactly as the schema says.
    model_config = ConfigDict(extra="forbid")


# The customer id becomes the local part of the confirmation address
# (``<customer_id>@customers.example.com``): letters, digits, ``-`` and ``_`` only.
CUSTOMER_ID = r"^[A-Za-z0-9_-]{1,64}$"
SKU = r"^[A-Z0-9][A-Z0-9-]{0,63}$"
PAYMENT_TOKEN = r"^[A-Za-z0-9_]{1,100}$"
# Printable text: no control characters, at least one character besides spaces.
TEXT = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"

Country = enum.StrEnum(  # type: ignore[misc]
    "Country", sorted((c.alpha_2, c.alpha_2) for c in pycountry.countries)
)


class ItemIn(_Strict):
    sku: str = Field(min_length=1, max_length=64, pattern=SKU)
    quantity: int = Field(ge=1, le=1000)

    @field_validator("quantity", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        # A JSON integer, as JSON Schema means it: 2 and 2.0, never "2" or true.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("Input should be a valid integer")
        return value


class AddressIn(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    line1: str = Field(min_length=1, max_length=200, pattern=TEXT)
    city: str = Field(min_length=1, max_length=100, pattern=TEXT)
    postal_code: str = Field(min_length=1, max_length=20, pattern=TEXT)
    country: Country = Field(description="ISO 3166-1 alpha-2, upper case")


class OrderIn(_Strict):
    customer_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=CUSTOMER_ID,
        description="Letters, digits, '-' and '_': the confirmation goes to "
        "<customer_id>@customers.example.com.",
    )
    items: list[ItemIn] = Field(min_length=1, max_length=50)
    payment_token: str = Field(min_length=1, max_length=100, pattern=PAYMENT_TOKEN)
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
    if summary and summary.get("definition") == "order_checkout_remote":
        mode = "remote"
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


_UNAVAILABLE = {429: ErrorOut, 503: ErrorOut}
IDEMPOTENCY_KEY = r"^[!-~]{1,200}$"


@router.post(
    "/",
    response={
        202: OrderOut,
        400: ErrorOut,
        413: ErrorOut,
        422: ErrorOut,
        **_UNAVAILABLE,
    },
    url_name="order-create",
    throttle=[CheckoutThrottle()],
)
def create_order(
    request: HttpRequest,
    response: HttpResponse,
    payload: OrderIn,
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=IDEMPOTENCY_KEY,
        description="Printable ASCII; the same key and body within the retention "
        "period return the first order.",
    ),
    # ninja reads parameters from their defaults (B008 does not apply).
    # Optional, but never null: a header has no null, so the schema says none.
    saga_mode: FlowMode = Header(  # type: ignore[assignment]  # noqa: B008
        None,
        alias="X-Saga-Mode",
        description="`orchestration`, `remote` or `choreography`; the body's "
        "`mode` wins.",
    ),
) -> Status[dict[str, Any]]:
    """Place a guest order, fulfilled asynchronously by the order saga or by the
    choreographed flow of events (``mode``).

    400: malformed JSON or invalid fields (each named); 413: body too large;
    422: an unknown SKU, or the Idempotency-Key reused with another body;
    429: too many orders from this client; 503: database unavailable (both
    with Retry-After).
    """
    try:
        order, created = checkout(
            customer_id=payload.customer_id,
            lines=[LineRequest(sku=i.sku, quantity=i.quantity) for i in payload.items],
            payment_token=payload.payment_token,
            shipping_address=payload.shipping_address.model_dump(mode="json"),
            idempotency_key=idempotency_key,
            mode=payload.mode or saga_mode,
        )
    except UnknownSku as exc:
        unknown = set(exc.skus)
        return Status(
            422,
            {
                "detail": str(exc),
                "errors": [
                    {"field": f"items.{n}.sku", "message": f"unknown SKU: {i.sku}"}
                    for n, i in enumerate(payload.items)
                    if i.sku in unknown
                ],
            },
        )
    except IdempotencyConflict as exc:
        return Status(
            422,
            {
                "detail": str(exc),
                "errors": [{"field": "Idempotency-Key", "message": str(exc)}],
            },
        )
    if not created:
        response["Idempotent-Replayed"] = "true"
    return Status(202, _order_out(order))


@router.get(
    "/{uuid:order_id}/",
    response={200: OrderOut, 404: ErrorOut, 503: ErrorOut},
    url_name="order-detail",
)
def get_order(request: HttpRequest, order_id: UUID) -> dict[str, Any]:
    """Return an order with its saga's progress."""
    order = order_get(order_id=order_id)
    if order is None:
        raise HttpError(404, "order not found")
    return _order_out(order)
