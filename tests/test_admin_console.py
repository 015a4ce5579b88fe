"""The saga changelist and detail page: what an operator sees, and how fast."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from sagas.admin.changelist import EstimatedCountPaginator, search_sagas
from sagas.models import Saga, SagaEvent, StepAttempt
from tests.admin_support import (
    CHANGELIST,
    button_post,
    change_url,
    compensated_saga,
    completed_saga,
    current_nodes,
    diagram,
    failed_saga,
    pending_saga,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def _park_fast(settings: Any) -> None:
    # A compensation that fails once parks the saga: failed sagas come cheap.
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1


def _listed(response: Any) -> list[str]:
    return [saga.business_key for saga in response.context["cl"].result_list]


def test_changelist_shows_each_saga_with_its_step_and_attempts(
    admin_client: Client,
) -> None:
    # given
    failed = failed_saga("order:failed")
    completed_saga("order:done")
    pending_saga("order:new")

    # when
    response = admin_client.get(CHANGELIST)

    # then
    assert response.status_code == 200
    rows = {saga.business_key: saga for saga in response.context["cl"].result_list}
    assert set(rows) == {"order:failed", "order:done", "order:new"}
    # step_one and step_two actions, then step_one's compensation, which failed.
    assert rows["order:failed"].attempt_count == 3
    assert rows["order:done"].attempt_count == 4
    assert rows["order:new"].attempt_count == 1
    html = response.content.decode()
    assert '<span class="saga-badge saga-badge--failed">failed</span>' in html
    assert "step_one (compensation #1, failed)" in html
    assert "step_one (action #1, dispatched)" in html
    assert f'title="{failed.pk}"' in html


def test_changelist_counts_sagas_per_status_in_one_query(admin_client: Client) -> None:
    # given
    failed_saga("order:1")
    completed_saga("order:2")
    completed_saga("order:3")
    pending_saga("order:4")

    # when
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    # then
    counts = {value: count for value, _, count in response.context["status_counts"]}
    assert counts == {
        "pending": 1,
        "running": 0,
        "compensating": 0,
        "completed": 2,
        "compensated": 0,
        "failed": 1,
        "resolved": 0,
    }
    counting = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "sagas_saga"."status"')
    ]
    assert len(counting) == 1
    assert "GROUP BY" in counting[0]
    assert 'data-status-count="completed">2<' in response.content.decode()


def test_changelist_filters_by_status_definition_and_stuck(
    admin_client: Client,
) -> None:
    # given
    failed_saga("order:failed")
    completed_saga("order:done")
    pending_saga("order:fresh")
    stale = pending_saga("order:stale")
    long_ago = timezone.now() - timedelta(hours=1)
    Saga.objects.filter(pk=stale.pk).update(updated_at=long_ago)

    # when
    by_status = admin_client.get(CHANGELIST, {"status__exact": "failed"})
    by_definition = admin_client.get(CHANGELIST, {"definition": "test_four_steps"})
    other_definition = admin_client.get(CHANGELIST, {"definition": "order_checkout"})
    stuck = admin_client.get(CHANGELIST, {"stuck": "yes"})

    # then
    assert _listed(by_status) == ["order:failed"]
    assert len(_listed(by_definition)) == 4
    assert _listed(other_definition) == []
    assert sorted(_listed(stuck)) == ["order:failed", "order:stale"]


def test_search_matches_exact_id_and_key_or_key_prefix_only(
    admin_client: Client,
) -> None:
    # given
    first = completed_saga("order:1001")
    completed_saga("order:1002")
    completed_saga("invoice:1001")

    # when
    by_id = admin_client.get(CHANGELIST, {"q": str(first.pk)})
    by_key = admin_client.get(CHANGELIST, {"q": "order:1001"})
    by_prefix = admin_client.get(CHANGELIST, {"q": "order:"})
    by_middle = admin_client.get(CHANGELIST, {"q": "1001"})
    by_id_prefix = admin_client.get(CHANGELIST, {"q": str(first.pk)[:8]})

    # then
    assert _listed(by_id) == ["order:1001"]
    assert _listed(by_key) == ["order:1001"]
    assert sorted(_listed(by_prefix)) == ["order:1001", "order:1002"]
    assert _listed(by_middle) == []
    assert _listed(by_id_prefix) == []


def _plan_without_seq_scan(sql: str, params: Any = None) -> str:
    """Return PostgreSQL's plan for ``sql`` when sequential scans are avoided.

    With ``enable_seqscan`` off the planner still scans the table if no index
    can serve the query, so a plan free of "Seq Scan" proves an index path.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"status__exact": "failed"},
        {"definition": "test_four_steps"},
        {"stuck": "yes"},
        {"q": "order:10"},
        {"q": "8d7c50a6-6c1b-4b7e-9d43-0d1b2f9c7a11"},
        {"stuck": "yes", "q": "order:"},
    ],
    ids=["all", "status", "definition", "stuck", "key-prefix", "id", "stuck-and-key"],
)
def test_every_changelist_query_on_sagas_can_use_an_index(
    admin_client: Client, params: dict[str, str]
) -> None:
    # given
    failed_saga("order:10")
    completed_saga("order:11")

    # when
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST, params)

    # then
    assert response.status_code == 200
    saga_queries = [
        q["sql"] for q in queries.captured_queries if '"sagas_saga"' in q["sql"]
    ]
    assert saga_queries
    for sql in saga_queries:
        plan = _plan_without_seq_scan(sql)
        assert "Seq Scan" not in plan, f"{sql}\n{plan}"


def test_search_by_key_prefix_uses_the_business_key_index() -> None:
    # given
    completed_saga("order:1")

    # when
    query = search_sagas(Saga.objects.order_by(), "order:").query
    plan = _plan_without_seq_scan(*query.sql_with_params())

    # then
    assert "business_key" in plan
    assert "Seq Scan" not in plan


def test_paginator_takes_the_size_of_a_large_unfiltered_table_from_statistics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: statistics that know of three sagas, then two more sagas
    for number in range(3):
        pending_saga(f"order:{number}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sagas_saga")
    pending_saga("order:3")
    pending_saga("order:4")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 1)

    # when
    with CaptureQueriesContext(connection) as queries:
        estimated = EstimatedCountPaginator(Saga.objects.all(), 50).count
    filtered = EstimatedCountPaginator(
        Saga.objects.filter(business_key__startswith="order:"), 50
    ).count

    # then
    assert estimated == 3
    assert not any("COUNT(" in q["sql"] for q in queries.captured_queries)
    assert filtered == 5


def test_paginator_counts_exactly_below_its_threshold() -> None:
    # given
    for number in range(3):
        pending_saga(f"order:{number}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sagas_saga")
    pending_saga("order:3")

    # when
    count = EstimatedCountPaginator(Saga.objects.all(), 50).count

    # then
    assert count == 4


def test_detail_shows_diagram_attempts_timeline_and_context(
    admin_client: Client,
) -> None:
    # given
    saga = failed_saga("order:77")

    # when
    response = admin_client.get(change_url(saga.pk))

    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert diagram(html) == {
        ("step_one", "action"): "succeeded",
        ("step_two", "action"): "failed",
        ("step_three", "action"): "not_started",
        ("step_four", "action"): "not_started",
        ("step_one", "compensation"): "failed",
        ("step_two", "compensation"): "not_started",
        ("step_three", "compensation"): "not_started",
        ("step_four", "compensation"): "not_started",
    }
    assert current_nodes(html) == [("step_one", "compensation")]
    assert html.count("<tr data-attempt=") == 3
    assert "step_two refused" in html
    assert "sagas.errors.PermanentError" in html
    assert "step_one compensation flaked" in html
    events = SagaEvent.objects.filter(saga=saga).count()
    assert html.count('<tr class="saga-event') == events
    pretty = json.dumps(saga.context, indent=2, sort_keys=True)
    assert pretty.replace('"', "&quot;") in html


def test_detail_of_a_compensated_saga_shows_the_undone_step(
    admin_client: Client,
) -> None:
    # given
    saga = compensated_saga("order:78")

    # when
    html = admin_client.get(change_url(saga.pk)).content.decode()

    # then
    nodes = diagram(html)
    assert nodes["step_one", "compensation"] == "succeeded"
    assert nodes["step_two", "action"] == "failed"
    # A finished saga has no current step.
    assert current_nodes(html) == []


def test_detail_page_is_read_only(admin_client: Client) -> None:
    # given
    saga = failed_saga("order:79")
    before = Saga.objects.get(pk=saga.pk)

    # when
    page = admin_client.get(change_url(saga.pk))
    edit = admin_client.post(
        change_url(saga.pk), {"business_key": "changed", "status": "completed"}
    )
    add = admin_client.get("/admin/sagas/saga/add/")
    delete = admin_client.post(f"/admin/sagas/saga/{saga.pk}/delete/", {"post": "yes"})

    # then
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert "deletelink" not in html
    assert edit.status_code == 403
    assert add.status_code == 403
    assert delete.status_code == 403
    after = Saga.objects.get(pk=saga.pk)
    assert (after.business_key, after.status) == (before.business_key, before.status)


def test_detail_offers_only_the_actions_that_fit_the_status(
    admin_client: Client,
) -> None:
    # given
    failed = failed_saga("order:80")
    pending = pending_saga("order:81")
    done = completed_saga("order:82")

    # when
    pages = {
        name: admin_client.get(change_url(saga.pk)).content.decode()
        for name, saga in [("failed", failed), ("pending", pending), ("done", done)]
    }

    # then
    def offered(html: str) -> set[str]:
        return {
            action
            for action in ("retry", "resume", "compensate", "resolve")
            if f"saga-action--{action}" in html
        }

    assert offered(pages["failed"]) == {"retry", "resolve"}
    assert offered(pages["pending"]) == {"resume", "compensate"}
    assert offered(pages["done"]) == set()


@pytest.mark.parametrize("page", ["list", "saga", "confirmation", "versions"])
def test_every_saga_page_links_the_admins_stylesheet(
    admin_client: Client, page: str
) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    if page == "list":
        response = admin_client.get(CHANGELIST)
    elif page == "saga":
        response = admin_client.get(change_url(saga.pk))
    elif page == "confirmation":
        response = admin_client.post(CHANGELIST, button_post(saga.pk, "retry"))
    else:
        response = admin_client.get(f"{CHANGELIST}versions/")

    # then: the stylesheet is the admin's Media, not CSS inlined in the page
    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="/static/sagas/admin/sagas.css"' in html
    assert "<style" not in html


def test_saga_page_explains_fields_with_the_models_help_text(
    admin_client: Client,
) -> None:
    # given
    saga = failed_saga("order:1")

    def help_of(model: type[Model], name: str) -> str:
        return escape(model._meta.get_field(name).help_text)  # type: ignore[union-attr]

    # when
    html = admin_client.get(change_url(saga.pk)).content.decode()

    # then: read-only model fields carry their help text, as do the attempts'
    # column headers
    for name in ("business_key", "wake_at", "last_error", "finished_at"):
        assert f"<div>{help_of(Saga, name)}</div>" in html, name
    sent = help_of(StepAttempt, "dispatches")
    redelivered = help_of(StepAttempt, "deliveries")
    assert f'title="{sent} / {redelivered}">Sent / redelivered</th>' in html


@pytest.mark.parametrize("app_label", ["sagas", "saga_events"])
def test_every_field_of_the_engines_models_says_what_it_means(app_label: str) -> None:
    # when
    missing = [
        f"{model.__name__}.{field.name}"
        for model in apps.get_app_config(app_label).get_models()
        for field in model._meta.concrete_fields
        if not field.auto_created and not field.help_text
    ]

    # then
    assert missing == []
