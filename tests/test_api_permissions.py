"""The staff saga API: who may read a saga, and what secrets a reader sees."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client

from sagas.engine import saga_start
from sagas.models import Saga
from sagas.redaction import REDACTED, SCRUBBED, structlog_processor
from sagas.testing import run_saga_inline
from tests.admin_support import TEST_SAGA, change_url, logged_in, make_user
from tests.helpers import order_body, post_order

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ENDPOINTS = ("{}/", "{}/attempts/", "{}/timeline/")


def _grouped_viewer() -> Any:
    user = make_user("grouped")
    group = Group.objects.create(name="saga viewers")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="sagas", codename="view_saga")
    )
    user.groups.add(group)
    return user


# user factory -> expected status on every endpoint
MATRIX: dict[str, tuple[Any, int]] = {
    "anonymous": (lambda: None, 401),
    "inactive_staff_with_view": (
        lambda: _inactive(make_user("inactive", perms=["view_saga"])),
        401,
    ),
    "customer": (lambda: make_user("customer", staff=False), 403),
    "non_staff_with_view": (
        lambda: make_user("nonstaff", staff=False, perms=["view_saga"]),
        403,
    ),
    "staff_without_permissions": (lambda: make_user("bare"), 403),
    "staff_with_operator_perms_only": (
        lambda: make_user("operator", perms=["retry_saga", "resolve_saga"]),
        403,
    ),
    "staff_with_view": (lambda: make_user("viewer", perms=["view_saga"]), 200),
    "staff_with_view_through_group": (_grouped_viewer, 200),
    "superuser": (lambda: make_user("root", superuser=True), 200),
}


def _inactive(user: Any) -> Any:
    user.is_active = False
    user.save()
    return user


@pytest.mark.parametrize("who", sorted(MATRIX))
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_saga_api_permission_matrix(who: str, endpoint: str) -> None:
    # given
    saga = saga_start(TEST_SAGA, business_key=f"matrix:{who}")
    factory, expected = MATRIX[who]
    client = logged_in(factory())

    # when
    response = client.get("/api/sagas/" + endpoint.format(saga.pk))

    # then
    assert response.status_code == expected, response.content
    assert response["Content-Type"] == "application/json; charset=utf-8"
    if expected != 200:
        assert "saga" not in response.json()
        assert "context" not in response.json()


def test_unknown_saga_is_a_json_404_for_a_viewer() -> None:
    client = logged_in(make_user("viewer", perms=["view_saga"]))

    for endpoint in ENDPOINTS:
        path = "/api/sagas/" + endpoint.format("00000000-0000-0000-0000-000000000000")
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "saga not found"}


def test_attempts_and_events_are_paged() -> None:
    # given: a saga that ran four steps (4 attempts, more than 4 events)
    saga = run_saga_inline(saga_start(TEST_SAGA, business_key="paged").pk)
    client = logged_in(make_user("viewer", perms=["view_saga"]))
    base = f"/api/sagas/{saga.pk}"

    # when
    detail = client.get(f"{base}/").json()
    first = client.get(f"{base}/attempts/?limit=3").json()
    rest = client.get(f"{base}/attempts/?limit=3&offset=3").json()
    events = client.get(f"{base}/timeline/?limit=2&offset=1").json()
    too_big = client.get(f"{base}/timeline/?limit=100000")

    # then
    assert detail["attempts_count"] == 4
    assert first["count"] == rest["count"] == 4
    assert [a["step"] for a in first["items"] + rest["items"]] == [
        "step_one",
        "step_two",
        "step_three",
        "step_four",
    ]
    assert events["count"] == detail["timeline_count"] > 4
    assert events["items"] == detail["timeline"][1:3]
    assert too_big.status_code == 400
    assert too_big.json()["errors"][0]["field"] == "query.limit"


@pytest.fixture
def _catalogue() -> None:
    call_command("seed_catalog", stock=10, verbosity=0)


@pytest.mark.usefixtures("_catalogue")
def test_payment_token_is_redacted_while_running_and_scrubbed_once_finished() -> None:
    # given: an order whose saga has not run yet
    placed = post_order(Client(), order_body(token="tok_visa")).json()
    viewer = logged_in(make_user("viewer", perms=["view_saga"]))
    admin = logged_in(make_user("root", superuser=True))

    # when: read while running
    running_api = viewer.get(f"/api/sagas/{placed['saga_id']}/").json()
    running_admin = admin.get(change_url(placed["saga_id"])).content.decode()
    stored_while_running = Saga.objects.get(pk=placed["saga_id"]).context

    # then: readers never see it, the steps still can
    assert stored_while_running["payment_token"] == "tok_visa"
    assert running_api["context"]["payment_token"] == REDACTED
    assert running_api["context"]["order_id"] == placed["id"]
    assert "tok_visa" not in running_admin
    assert REDACTED in running_admin

    # when: the saga finishes
    saga = run_saga_inline(placed["saga_id"])

    # then: the stored context keeps no secret
    assert saga.status == "completed"
    assert saga.context["payment_token"] == SCRUBBED
    assert saga.context["order_id"] == placed["id"]
    assert "tok_visa" not in admin.get(f"/admin/orders/order/{placed['id']}/change/")


def test_log_lines_never_carry_a_declared_secret() -> None:
    # given: the project's structlog chain
    processors = structlog.get_config()["processors"]

    # when
    line = structlog_processor(
        None,
        "info",
        {"event": "x", "payment_token": "tok_visa", "ctx": {"payment_token": "t"}},
    )

    # then
    assert structlog_processor in processors
    assert line == {
        "event": "x",
        "payment_token": REDACTED,
        "ctx": {"payment_token": REDACTED},
    }
