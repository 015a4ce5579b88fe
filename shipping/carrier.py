"""The sandbox carrier: books and cancels shipments, refuses Antarctica (``AQ``)."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from config.routers import SANDBOX_ALIAS
from config.sandbox import insert_new, network_latency
from shipping.models import CarrierBooking, CarrierBookingStatus

UNSUPPORTED_COUNTRIES = frozenset({"AQ"})


class UnsupportedDestination(Exception):
    """Permanent: the carrier does not deliver there."""


class BookingVoided(Exception):
    """Permanent: the booking key was cancelled before it was booked."""


def book(*, key: str, country: str) -> str:
    """Book a shipment; return its tracking number. Same key, same booking."""
    network_latency()
    if country in UNSUPPORTED_COUNTRIES:
        raise UnsupportedDestination(f"the carrier does not deliver to {country}")
    # The first call with a key books; a later one (or a cancel that came
    # first and voided the key) leaves the row as it is.
    pk = insert_new(
        CarrierBooking,
        "key",
        key=key,
        country=country,
        status=CarrierBookingStatus.BOOKED,
    )
    if pk is None:
        booking = CarrierBooking.objects.get(key=key)
        if booking.status == CarrierBookingStatus.VOIDED:
            raise BookingVoided("this shipment was cancelled before it was booked")
        pk = booking.pk
    return f"SBX{pk:010d}"


def cancel(*, key: str) -> bool:
    """Cancel the booking made with ``key``; return True if one was cancelled now."""
    network_latency()
    with transaction.atomic(using=SANDBOX_ALIAS):
        booking = CarrierBooking.objects.select_for_update().filter(key=key).first()
        if booking is None:
            try:
                with transaction.atomic(using=SANDBOX_ALIAS):
                    CarrierBooking.objects.create(
                        key=key, country="", status=CarrierBookingStatus.VOIDED
                    )
            except IntegrityError:
                return cancel(key=key)
            return False
        if booking.status != CarrierBookingStatus.BOOKED:
            return False
        booking.status = CarrierBookingStatus.CANCELLED
        booking.save(update_fields=["status"])
        return True
