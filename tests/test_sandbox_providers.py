"""The sandbox gateway and carrier: idempotent by key, under concurrent calls
too, with injected faults consumed one call at a time (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from config.routers import SANDBOX_ALIAS
from payments import gateway
from payments.models import (
    GatewayCharge,
    GatewayChargeStatus,
    GatewayFault,
    GatewayLedgerEntry,
)
from shipping import carrier
from shipping.models import CarrierBooking, CarrierBookingStatus

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _together(call: Callable[[], Any], n: int = 8) -> list[Any]:
    """Run ``call`` in ``n`` threads released at once; return results or errors."""
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(call())
        except Exception as exc:  # collected for the assertions
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_charges_with_one_key_capture_once() -> None:
    key = f"charge:{uuid.uuid4()}"

    results = _together(
        lambda: gateway.charge(key=key, token="tok_visa", amount_cents=500)
    )

    assert len(set(results)) == 1, results
    assert str(results[0]).startswith("ch_"), results
    charge = GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key)
    assert charge.status == GatewayChargeStatus.CAPTURED
    assert list(
        GatewayLedgerEntry.objects.using(SANDBOX_ALIAS)
        .filter(charge=charge)
        .values_list("amount_cents", flat=True)
    ) == [500]


def test_a_refund_first_voids_the_key_for_a_late_charge() -> None:
    key = f"charge:{uuid.uuid4()}"

    refunded = gateway.refund(key=key)

    assert refunded == 0
    with pytest.raises(gateway.ChargeVoided):
        gateway.charge(key=key, token="tok_visa", amount_cents=500)
    assert not GatewayLedgerEntry.objects.using(SANDBOX_ALIAS).exists()


def test_a_declined_charge_is_recorded_and_stays_declined() -> None:
    key = f"charge:{uuid.uuid4()}"

    with pytest.raises(gateway.CardDeclined):
        gateway.charge(key=key, token="tok_chargeDeclined", amount_cents=500)

    assert (
        GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key).status
        == GatewayChargeStatus.DECLINED
    )


def test_a_processing_error_fails_once_then_the_same_key_captures_once() -> None:
    key = f"charge:{uuid.uuid4()}"

    with pytest.raises(gateway.GatewayUnavailable):
        gateway.charge(key=key, token="tok_processingError", amount_cents=700)
    errored = GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key)
    first = gateway.charge(key=key, token="tok_processingError", amount_cents=700)
    again = gateway.charge(key=key, token="tok_processingError", amount_cents=700)

    assert (errored.status, errored.processing_errors) == (
        GatewayChargeStatus.ERRORED,
        1,
    )
    assert first == again == f"ch_{errored.pk}"
    assert GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key).status == (
        GatewayChargeStatus.CAPTURED
    )
    assert list(
        GatewayLedgerEntry.objects.using(SANDBOX_ALIAS)
        .filter(charge=errored)
        .values_list("amount_cents", flat=True)
    ) == [700]


def _statements(call: Callable[[], Any]) -> list[str]:
    """Run ``call``; return the statements it sent on the sandbox connection."""
    with CaptureQueriesContext(connections[SANDBOX_ALIAS]) as captured:
        call()
    return [query["sql"].split()[0] for query in captured.captured_queries]


def test_a_new_keys_charge_is_one_statement_with_its_ledger_entry() -> None:
    # A stand-in for a remote provider costs the worker little: the fault
    # check, the charge and its ledger entry in one statement.
    key = f"charge:{uuid.uuid4()}"

    sent = _statements(
        lambda: gateway.charge(key=key, token="tok_visa", amount_cents=500)
    )

    assert sent == ["WITH"]
    charge = GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key)
    assert (charge.status, charge.amount_cents, charge.processing_errors) == (
        GatewayChargeStatus.CAPTURED,
        500,
        0,
    )
    assert list(
        GatewayLedgerEntry.objects.using(SANDBOX_ALIAS).values_list(
            "charge_id", "amount_cents"
        )
    ) == [(charge.pk, 500)]


def test_a_declined_new_key_is_recorded_in_one_statement_with_no_ledger_entry() -> None:
    key = f"charge:{uuid.uuid4()}"

    with pytest.raises(gateway.CardDeclined):
        gateway.charge(key=key, token="tok_chargeDeclined", amount_cents=500)

    charge = GatewayCharge.objects.using(SANDBOX_ALIAS).get(key=key)
    assert charge.status == GatewayChargeStatus.DECLINED
    assert not GatewayLedgerEntry.objects.using(SANDBOX_ALIAS).exists()


def test_a_new_keys_booking_is_one_statement() -> None:
    key = f"book:{uuid.uuid4()}"

    sent = _statements(lambda: carrier.book(key=key, country="DE"))

    assert sent == ["INSERT"]
    assert (
        CarrierBooking.objects.using(SANDBOX_ALIAS).get(key=key).status
        == CarrierBookingStatus.BOOKED
    )


def test_an_injected_fault_fails_that_many_calls_then_lets_them_through() -> None:
    GatewayFault.objects.using(SANDBOX_ALIAS).create(
        operation="charge", remaining=2, message="gateway down"
    )
    key = f"charge:{uuid.uuid4()}"

    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(gateway.charge(key=key, token="tok_visa", amount_cents=1))
        except gateway.GatewayUnavailable as exc:
            outcomes.append(str(exc))

    assert outcomes[:2] == ["gateway down", "gateway down"]
    assert outcomes[2].startswith("ch_")
    assert GatewayFault.objects.using(SANDBOX_ALIAS).get().remaining == 0


def test_concurrent_bookings_with_one_key_book_once() -> None:
    key = f"book:{uuid.uuid4()}"

    results = _together(lambda: carrier.book(key=key, country="DE"))

    assert len(set(results)) == 1, results
    assert str(results[0]).startswith("SBX"), results
    assert CarrierBooking.objects.using(SANDBOX_ALIAS).filter(key=key).count() == 1


def test_a_cancel_first_voids_the_booking_key() -> None:
    key = f"book:{uuid.uuid4()}"

    assert carrier.cancel(key=key) is False
    with pytest.raises(carrier.BookingVoided):
        carrier.book(key=key, country="DE")
    assert (
        CarrierBooking.objects.using(SANDBOX_ALIAS).get(key=key).status
        == CarrierBookingStatus.VOIDED
    )
