"""Idempotency keys: made and read in one module, by the engine and the admins."""

from __future__ import annotations

from uuid import UUID

import pytest

from sagas.definition import StepContext
from sagas.idempotency import make_key, saga_id_from_key, saga_prefix

SAGA = UUID("2b1f0c7e-5d4a-4c3b-9a8f-0123456789ab")


def test_a_key_names_saga_step_and_kind() -> None:
    assert make_key(SAGA, "charge_payment") == f"{SAGA}:charge_payment:action"
    assert (
        make_key(SAGA, "charge_payment", "compensation")
        == f"{SAGA}:charge_payment:compensation"
    )


def test_every_key_of_a_saga_starts_with_its_prefix() -> None:
    prefix = saga_prefix(SAGA)

    assert make_key(SAGA, "reserve_stock").startswith(prefix)
    assert make_key(SAGA, "reserve_stock", "compensation").startswith(prefix)
    assert not make_key(UUID(int=1), "reserve_stock").startswith(prefix)


@pytest.mark.parametrize("kind", ["action", "compensation"])
def test_the_saga_id_is_read_back_from_a_key(kind: str) -> None:
    assert saga_id_from_key(make_key(SAGA, "create_shipment", kind)) == SAGA
    assert saga_id_from_key(make_key(str(SAGA), "create_shipment", kind)) == SAGA


@pytest.mark.parametrize("key", ["", "order:42", "not-a-uuid:step:action", ":x:y"])
def test_a_key_without_a_saga_id_gives_none(key: str) -> None:
    assert saga_id_from_key(key) is None


def test_step_context_keys_are_the_modules() -> None:
    ctx = StepContext(
        saga_id=SAGA,
        business_key="order:1",
        step="charge_payment",
        kind="compensation",
        attempt=1,
        data={},
    )

    assert ctx.idempotency_key == make_key(SAGA, "charge_payment", "compensation")
    assert ctx.action_key == make_key(SAGA, "charge_payment")
    assert saga_id_from_key(ctx.idempotency_key) == SAGA


def test_the_admin_still_exports_the_key_reader() -> None:
    from sagas.admin import saga_id_from_key as exported

    assert exported is saga_id_from_key
