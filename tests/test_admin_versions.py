"""Deploys seen from the admin: versions in flight, the check, skip and migrate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from sagas import registry
from sagas.models import SagaEvent, StepAttempt
from sagas.states import AttemptStatus, SagaStatus
from tests.admin_support import (
    CHANGELIST,
    button_post,
    confirm_post,
    failed_saga,
    logged_in,
    make_user,
)
from tests.engine_support import cleanup, define, run_next, start

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

VERSIONS = "/admin/sagas/saga/versions/"


@pytest.fixture(autouse=True)
def _definitions() -> Iterator[None]:
    yield from cleanup()


def test_versions_page_lists_sagas_in_flight_and_flags_a_missing_version(
    admin_client: Client,
) -> None:
    # given: two sagas of v1, then v1 removed from the code and v2 deployed
    define("c", "c", name="shipping_flow")
    first, second = start("shipping_flow"), start("shipping_flow")
    run_next(first.pk)
    registry.unregister("shipping_flow")
    v2 = define("c", "c", name="shipping_flow", version=2)
    registry.register(replace(v2, version=3, retired=True))

    # when
    page = admin_client.get(VERSIONS).content.decode()

    # then
    assert 'data-version="shipping_flow:1"' in page
    row = page.split('data-version="shipping_flow:1"')[1].split("</tr>")[0]
    assert "<td>2</td>" in row
    assert "missing: these sagas cannot move" in row
    drained = page.split('data-version="shipping_flow:3"')[1].split("</tr>")[0]
    assert "retired, drained: can be removed" in drained
    assert second.version == 1


def test_system_check_warns_about_sagas_of_a_version_not_in_the_code() -> None:
    define("c", name="vanishing")
    start("vanishing")
    assert not [m for m in run_checks(databases=["default"]) if m.id == "sagas.W003"]
    registry.unregister("vanishing")

    messages = [m for m in run_checks(databases=["default"]) if m.id == "sagas.W003"]

    assert len(messages) == 1
    assert "'vanishing' version 1" in messages[0].msg


def test_operator_moves_a_saga_to_another_version_from_the_admin(
    admin_client: Client,
) -> None:
    define("c", "c", names=("reserve", "charge"), name="movable")
    saga = start("movable")
    run_next(saga.pk)
    define(
        "c", "c", "c", names=("reserve", "charge", "ship"), name="movable", version=2
    )

    form = admin_client.post(CHANGELIST, button_post(saga.pk, "migrate"))
    response = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "migrate", version="2", reason="v1 retired")
    )

    assert 'name="version"' in form.content.decode()
    assert response.status_code == 302
    saga.refresh_from_db()
    assert saga.version == 2
    assert SagaEvent.objects.filter(
        saga=saga, actor="operator:admin", detail__contains="v1 retired"
    ).exists()


def test_operator_skips_a_failed_compensation_from_the_admin(
    admin_client: Client, settings: Any
) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1
    saga = failed_saga("order:skip")

    response = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "skip", reason="released by hand in the WMS")
    )

    assert response.status_code == 302
    saga.refresh_from_db()
    assert saga.status == SagaStatus.COMPENSATED
    assert StepAttempt.objects.filter(
        saga=saga, step="step_one", status=AttemptStatus.SKIPPED
    ).exists()


def test_moving_a_saga_needs_its_own_permission() -> None:
    define("c", "c", name="guarded")
    saga = start("guarded")
    define("c", "c", name="guarded", version=2)
    others = [f"{a}_saga" for a in ("retry", "resume", "compensate", "resolve", "skip")]
    without = logged_in(make_user("viewer", perms=["view_saga", *others]))
    holder = logged_in(make_user("mover", perms=["view_saga", "migrate_saga"]))
    body = confirm_post(saga.pk, "migrate", version="2", reason="v2 is live")

    refused = without.post(CHANGELIST, body)
    saga.refresh_from_db()
    assert refused.status_code == 403
    assert saga.version == 1

    accepted = holder.post(CHANGELIST, body)
    saga.refresh_from_db()
    assert accepted.status_code == 302
    assert saga.version == 2
