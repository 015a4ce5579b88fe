"""The travel booking saga: hotel, flight, car, then the itinerary."""

from __future__ import annotations

from typing import Any

from examples.travel import services
from sagas.definition import RetryPolicy, SagaDefinition, Step, StepContext, StepKind
from sagas.registry import register


def _book(kind: str) -> Any:
    def book(ctx: StepContext) -> dict[str, Any]:
        if kind == "car" and not ctx.data.get("with_car", True):
            return {}
        services.booking_make(
            trip_id=ctx.data["trip_id"], kind=kind, key=ctx.idempotency_key
        )
        return {f"{kind}_booked": True}

    book.__name__ = f"book_{kind}"
    return book


def _cancel(ctx: StepContext) -> None:
    # The key the action used: cancelling what was (or may have been) booked.
    services.booking_cancel(key=ctx.action_key)


TRAVEL_BOOKING = register(
    SagaDefinition(
        name="travel_booking",
        version=1,
        steps=(
            Step("book_hotel", _book("hotel"), compensation=_cancel, timeout=30),
            Step(
                "book_flight",
                _book("flight"),
                compensation=_cancel,
                timeout=30,
                retry=RetryPolicy(max_attempts=3, backoff=0.2),
            ),
            Step("rent_car", _book("car"), compensation=_cancel, timeout=30),
            Step(
                "send_itinerary",
                _book("itinerary"),
                kind=StepKind.RETRIABLE,
                retry=RetryPolicy(max_attempts=None, max_backoff=60),
            ),
        ),
        on_completed=lambda outcome: services.trip_confirm(
            trip_id=outcome.data["trip_id"]
        ),
        on_compensated=lambda outcome: services.trip_cancel(
            trip_id=outcome.data["trip_id"], reason=outcome.error
        ),
    )
)
