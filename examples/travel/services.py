"""Booking services: what each step calls. Every call is idempotent by key."""

from __future__ import annotations

from django.db import transaction

from examples.travel.models import Booking, Trip, TripStatus
from sagas.engine import saga_start
from sagas.errors import PermanentError

# Destinations with no seat left on any flight: the flight step fails for good.
SOLD_OUT = {"XXX"}


@transaction.atomic
def trip_book(*, traveller: str, destination: str, with_car: bool = True) -> Trip:
    """Create a trip and start its saga in the same transaction."""
    trip = Trip.objects.create(
        traveller=traveller, destination=destination, with_car=with_car
    )
    saga = saga_start(
        "travel_booking", business_key=f"trip:{trip.pk}", context={"trip_id": trip.pk}
    )
    Trip.objects.filter(pk=trip.pk).update(saga_id=saga.pk)
    return trip


def booking_make(*, trip_id: int, kind: str, key: str) -> Booking:
    """Hold a booking of ``kind``; a second call with the same key finds the first."""
    trip = Trip.objects.get(pk=trip_id)
    if kind == "flight" and trip.destination in SOLD_OUT:
        raise PermanentError(f"No seats to {trip.destination}")
    booking, _ = Booking.objects.get_or_create(
        idempotency_key=key, defaults={"trip": trip, "kind": kind}
    )
    return booking


def booking_cancel(*, key: str) -> None:
    """Cancel the booking made with ``key``; nothing to do if it was never made."""
    Booking.objects.filter(idempotency_key=key).update(cancelled=True)


def trip_confirm(*, trip_id: int) -> None:
    Trip.objects.filter(pk=trip_id).update(status=TripStatus.BOOKED)


def trip_cancel(*, trip_id: int, reason: str) -> None:
    Trip.objects.filter(pk=trip_id).update(
        status=TripStatus.CANCELLED, failure_reason=reason
    )
