"""The travel saga, tested with the public testing kit only (``sagas.testing`` and
the fixtures of the ``sagas`` pytest plugin)."""

from __future__ import annotations

from typing import Any

import pytest

from examples.travel.models import Booking, Trip, TripStatus
from examples.travel.services import trip_book
from sagas import testing

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

SAGA = "travel_booking"
STEPS = ["book_hotel", "book_flight", "rent_car", "send_itinerary"]


def _held(trip: Trip) -> set[str]:
    held = Booking.objects.filter(trip=trip, cancelled=False)
    return set(held.values_list("kind", flat=True))


def test_a_trip_books_everything_on_a_real_worker(saga_worker: Any) -> None:
    # given a worker in this process, on the test database and a private broker
    trip = trip_book(traveller="ada", destination="LIS")

    # when
    [saga] = testing.wait_for_sagas([trip_id_saga(trip)], timeout=60)

    # then
    trip.refresh_from_db()
    assert saga.status == "completed"
    assert trip.status == TripStatus.BOOKED
    assert testing.steps_run(saga.pk) == STEPS
    assert _held(trip) == {"hotel", "flight", "car", "itinerary"}


def test_sold_out_flight_cancels_the_hotel_on_a_real_worker(saga_worker: Any) -> None:
    # given
    trip = trip_book(traveller="ada", destination="XXX")

    # when
    [saga] = testing.wait_for_sagas([trip_id_saga(trip)], timeout=60)

    # then
    trip.refresh_from_db()
    assert saga.status == "compensated"
    assert trip.status == TripStatus.CANCELLED
    assert "No seats" in trip.failure_reason
    assert testing.compensations_run(saga.pk) == ["book_hotel"]
    assert _held(trip) == set()


def test_a_failure_at_each_step_undoes_exactly_the_steps_before_it() -> None:
    # when each step up to the retriable one fails for good, in turn
    def start(key: str, context: dict[str, Any]) -> str:
        return str(trip_id_saga(trip_book(traveller=key, destination="LIS")))

    cases = testing.assert_compensates_in_reverse(SAGA, start=start)

    # then every case was checked, and nothing stays booked
    assert [case.compensated for case in cases] == [
        [],
        ["book_hotel"],
        ["book_flight", "book_hotel"],
    ]
    assert not Booking.objects.filter(cancelled=False).exists()
    assert set(Trip.objects.values_list("status", flat=True)) == {TripStatus.CANCELLED}


def test_a_worker_dying_after_the_flight_was_booked_books_it_once() -> None:
    # given the worker dies right after the flight provider accepted the booking
    trip = trip_book(traveller="ada", destination="LIS")
    with (
        testing.crashing_after(SAGA, STEPS.index("book_flight")),
        pytest.raises(testing.WorkerCrash),
    ):
        testing.run_saga_inline(trip_id_saga(trip))

    # when the sweeper re-sends the lost step after the lease
    saga = testing.recover_lost_step(trip_id_saga(trip))

    # then the trip is booked, with one flight
    assert saga.status == "completed"
    assert Booking.objects.filter(trip=trip, kind="flight").count() == 1


def test_a_cancellation_that_fails_once_is_retried() -> None:
    # given a hotel cancellation that fails the first time
    trip = trip_book(traveller="ada", destination="XXX")
    with testing.compensation_failing_once(SAGA, STEPS.index("book_hotel")):
        # when
        saga = testing.run_saga_inline(trip_id_saga(trip))

    # then it was retried and the hotel released
    assert saga.status == "compensated"
    assert _held(trip) == set()
    assert testing.compensations_run(saga.pk) == ["book_hotel"]


def test_a_lost_step_is_re_sent_only_once_the_lease_has_passed(
    saga_clock: Any, settings: Any
) -> None:
    # given a trip whose first step's message was lost (no worker ran it)
    settings.SAGAS_DISPATCH_LEASE = 30
    trip = trip_book(traveller="ada", destination="LIS")
    saga_id = trip_id_saga(trip)

    # when 10 s pass, the sweeper leaves it alone; after 31 s it re-sends it
    saga_clock.advance(10)
    early = testing.sweep_now()
    saga_clock.advance(21)
    late = testing.sweep_now()

    # then
    assert (early, late) == (0, 1)
    assert testing.run_saga_inline(saga_id).status == "completed"


def trip_id_saga(trip: Trip) -> Any:
    trip.refresh_from_db()
    return trip.saga_id
