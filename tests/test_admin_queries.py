"""The admin pages run a fixed number of queries, however many rows they show."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from sagas.engine import saga_retry
from sagas.models import Saga, StepAttempt
from sagas.testing import run_saga_inline
from tests.admin_support import (
    CHANGELIST,
    change_url,
    compensated_saga,
    completed_saga,
    failed_saga,
    logged_in,
    make_user,
    pending_saga,
)
from tests.helpers import place_order

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Session, user, counts per status, the sweeper's heartbeat, table size
# estimate, exact count (the test table is small), the page of rows.
CHANGELIST_QUERIES = 7
# Session, user, saga, step summary, attempts, events, one per related model
# on the default database (orders, reservations, payments, shipments), the
# content type of the History link.
DETAIL_QUERIES = 11


@pytest.fixture(autouse=True)
def _park_fast(settings: Any) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1


def _sagas(count: int, *, start: int = 0) -> None:
    """Create ``count`` sagas in every status an operator meets."""
    makers = [completed_saga, compensated_saga, failed_saga, pending_saga]
    for number in range(start, start + count):
        makers[number % len(makers)](f"order:{number}")


def _queries(client: Client, url: str, data: Any = None) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, data)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_changelist_queries_do_not_grow_with_the_rows_shown(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    # given
    _sagas(5)
    few = _queries(admin_client, CHANGELIST)
    _sagas(45, start=5)
    assert StepAttempt.objects.count() > 100

    # when
    with django_assert_max_num_queries(CHANGELIST_QUERIES):
        response = admin_client.get(CHANGELIST)

    # then
    assert len(response.context["cl"].result_list) == 50
    assert _queries(admin_client, CHANGELIST) == few


@pytest.mark.parametrize(
    "params",
    [{"status__exact": "failed"}, {"stuck": "yes"}, {"q": "order:1"}],
    ids=["status", "stuck", "search"],
)
def test_filtered_changelist_queries_stay_fixed(
    admin_client: Client, django_assert_max_num_queries: Any, params: dict[str, str]
) -> None:
    # given
    _sagas(50)

    # when / then
    with django_assert_max_num_queries(CHANGELIST_QUERIES):
        response = admin_client.get(CHANGELIST, params)
    assert response.context["cl"].result_list


def test_changelist_for_an_operator_adds_only_the_permission_lookups(
    django_assert_max_num_queries: Any,
) -> None:
    # given
    _sagas(50)
    client = logged_in(make_user("operator", perms=["view_saga", "retry_saga"]))

    # when / then: the user's and their groups' permissions, loaded once
    with django_assert_max_num_queries(CHANGELIST_QUERIES + 2):
        response = client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 50


def _retried(saga: Saga, times: int) -> Saga:
    """Retry a failed saga's failing compensation ``times`` times."""
    for _ in range(times):
        saga_retry(saga.pk, actor="tester", reason="again")
        saga = run_saga_inline(saga.pk)
    return saga


def test_detail_queries_do_not_grow_with_attempts_and_events(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    # given
    short = failed_saga("order:short")
    long = _retried(failed_saga("order:long"), times=15)
    assert StepAttempt.objects.filter(saga=long).count() == 18

    # when
    admin_client.get(change_url(short.pk))  # caches the content type
    few = _queries(admin_client, change_url(short.pk))
    with django_assert_max_num_queries(DETAIL_QUERIES):
        response = admin_client.get(change_url(long.pk))

    # then
    assert response.content.decode().count("<tr data-attempt=") == 18
    assert _queries(admin_client, change_url(long.pk)) == few


def test_detail_of_an_order_saga_lists_its_records_with_fixed_queries(
    catalogue: None, admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    # given
    placed = place_order(Client(), items=[("WIDGET-1", 1), ("GIZMO-1", 2)])
    run_saga_inline(placed["saga_id"])

    # when
    with (
        CaptureQueriesContext(connections["sandbox"]) as sandbox,
        django_assert_max_num_queries(DETAIL_QUERIES),
    ):
        response = admin_client.get(change_url(placed["saga_id"]))

    # then
    assert response.status_code == 200
    assert len(response.context["related"]) == 6
    # The sandbox gateway's charges and the carrier's bookings.
    assert len(sandbox.captured_queries) == 2


def test_bulk_confirmation_for_a_full_page_runs_fixed_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    # given
    _sagas(50)
    selected = [str(pk) for pk in Saga.objects.values_list("pk", flat=True)]

    # when
    with django_assert_max_num_queries(CHANGELIST_QUERIES):
        response = admin_client.post(
            CHANGELIST, {"action": "resolve_selected", "_selected_action": selected}
        )

    # then
    assert response.status_code == 200
    assert len(response.context["sagas"]) == 50
