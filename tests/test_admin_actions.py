"""Operator actions from the admin: one action per verb, run on one saga from its
page or on many from the list; refusals, repeats, bulk runs and busy sagas."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection, transaction
from django.test import Client

from sagas.models import Saga
from tests.admin_support import (
    CHANGELIST,
    button_post,
    change_url,
    completed_saga,
    confirm_post,
    failed_saga,
    former_action_url,
    operator_buttons,
    operator_events,
    pending_saga,
    snapshot,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

REASON = "checked with the warehouse"


@pytest.fixture(autouse=True)
def _park_fast(settings: Any) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1


def _messages(response: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize(
    ("action", "make", "refusal"),
    [
        ("retry", completed_saga, "only a failed saga can be retried, not completed"),
        ("resolve", pending_saga, "only a failed saga can be resolved, not pending"),
        (
            "compensate",
            failed_saga,
            "only a pending or running saga can be compensated, not failed",
        ),
        ("resume", completed_saga, "only an active saga can be resumed, not completed"),
    ],
)
def test_action_in_the_wrong_state_is_refused_and_changes_nothing(
    admin_client: Client, action: str, make: Callable[[str], Saga], refusal: str
) -> None:
    # given
    saga = make("order:1")
    before = snapshot(saga.pk)

    # when
    response = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, action, reason=REASON), follow=True
    )

    # then
    assert response.redirect_chain == [(change_url(saga.pk), 302)]
    [(level, text)] = _messages(response)
    assert level == "error"
    assert refusal in text
    assert "Nothing was changed" in text
    assert snapshot(saga.pk) == before
    assert operator_events(saga.pk) == []
    assert not LogEntry.objects.exists()


def test_confirmation_page_warns_when_the_action_does_not_fit(
    admin_client: Client,
) -> None:
    # given
    saga = completed_saga("order:1")

    # when
    response = admin_client.post(CHANGELIST, button_post(saga.pk, "retry"))

    # then
    assert response.status_code == 200
    assert b"does not apply to a saga that is completed" in response.content


def test_button_on_a_saga_page_posts_its_action_for_that_saga(
    admin_client: Client,
) -> None:
    # given
    saga = failed_saga("order:1")
    before = snapshot(saga.pk)

    # when: the page's retry button is pressed, posting what its form holds
    page = admin_client.get(change_url(saga.pk)).content.decode()
    button = operator_buttons(page)["retry"]
    posted = {k: v for k, v in button.items() if k not in ("url", "method", "button")}
    response = admin_client.post(button["url"], posted)

    # then: the saga list answers with the confirmation for that one saga
    assert (button["url"], button["method"]) == (CHANGELIST, "post")
    assert posted == {
        "csrfmiddlewaretoken": posted["csrfmiddlewaretoken"],
        "action": "retry_selected",
        "_selected_action": str(saga.pk),
        "_from_saga_page": "1",
    }
    assert response.status_code == 200
    assert response.templates[0].name == "admin/sagas/saga/operator_action.html"
    html = response.content.decode()
    assert html.count('name="_selected_action"') == 1
    assert f'name="_selected_action" value="{saga.pk}"' in html
    assert 'name="action" value="retry_selected"' in html
    assert 'name="post" value="yes"' in html
    assert 'name="_from_saga_page" value="1"' in html
    assert f'href="{change_url(saga.pk)}" class="closelink"' in html
    assert response.context["title"] == "Retry: order:1"
    assert [row.saga.pk for row in response.context["sagas"]] == [saga.pk]
    assert snapshot(saga.pk) == before


def test_confirmation_for_many_lists_each_saga_and_returns_to_the_list(
    admin_client: Client,
) -> None:
    # given
    failed = [failed_saga("order:1"), failed_saga("order:2")]
    done = completed_saga("order:3")
    sagas = [*failed, done]
    before = [snapshot(saga.pk) for saga in sagas]

    # when
    response = _bulk(admin_client, "resolve", sagas)

    # then
    assert response.status_code == 200
    assert response.templates[0].name == "admin/sagas/saga/operator_action.html"
    html = response.content.decode()
    for saga in sagas:
        assert f'<tr data-saga="{saga.pk}"' in html
        assert f'name="_selected_action" value="{saga.pk}"' in html
    assert f'<tr data-saga="{done.pk}" class="saga-not-offered">' in html
    assert "1 of these sagas is in a state this action does not apply to" in html
    assert 'name="_from_saga_page"' not in html
    assert f'href="{CHANGELIST}" class="closelink"' in html
    assert 'value="Mark resolved: 3 sagas"' in html
    assert response.context["title"] == "Mark resolved: 3 selected sagas"
    assert [snapshot(saga.pk) for saga in sagas] == before


def test_confirmation_renders_the_reason_with_the_admins_fieldset(
    admin_client: Client,
) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    asked = admin_client.post(CHANGELIST, button_post(saga.pk, "resolve"))
    empty = admin_client.post(CHANGELIST, confirm_post(saga.pk, "resolve", reason=""))

    # then
    html = asked.content.decode()
    assert '<fieldset class="module aligned ">' in html
    assert 'class="form-row field-reason"' in html
    assert '<div class="help" id="id_reason_helptext">' in html
    assert "<div>Recorded in the saga's timeline with your name.</div>" in html
    assert "Please correct the error below." not in html
    assert "Please correct the error below." in empty.content.decode()
    assert '<ul class="errorlist"' in empty.content.decode()


def test_one_saga_selected_in_the_list_returns_to_the_list_named(
    admin_client: Client,
) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    response = _bulk(admin_client, "resolve", [saga], post="yes", reason=REASON)

    # then
    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert _messages(response) == [("success", "Marked resolved: order:1.")]
    assert Saga.objects.get(pk=saga.pk).status == "resolved"


def test_former_action_page_leads_to_the_saga_page(admin_client: Client) -> None:
    # given
    saga = failed_saga("order:1")
    before = snapshot(saga.pk)

    # when
    response = admin_client.get(former_action_url(saga.pk, "retry"), follow=True)

    # then
    assert response.redirect_chain == [(change_url(saga.pk), 302)]
    assert "retry" in operator_buttons(response.content.decode())
    assert snapshot(saga.pk) == before


def test_same_action_posted_twice_applies_once(admin_client: Client) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    first = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "retry", reason=REASON), follow=True
    )
    after_first = snapshot(saga.pk)
    second = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "retry", reason=REASON), follow=True
    )

    # then
    assert _messages(first) == [("success", "Retry started: order:1.")]
    [(level, text)] = _messages(second)
    assert level == "error"
    assert "only a failed saga can be retried, not compensating" in text
    assert snapshot(saga.pk) == after_first
    retries = [e for e in operator_events(saga.pk) if e.detail == f"retry: {REASON}"]
    assert len(retries) == 1
    assert retries[0].actor == "operator:admin"
    assert (retries[0].old_status, retries[0].new_status) == ("failed", "compensating")


def test_resolve_twice_resolves_once(admin_client: Client) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    first = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "resolve", reason=REASON), follow=True
    )
    second = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "resolve", reason=REASON), follow=True
    )

    # then
    assert Saga.objects.get(pk=saga.pk).status == "resolved"
    assert _messages(first) == [("success", "Marked resolved: order:1.")]
    [(level, text)] = _messages(second)
    assert level == "error"
    assert "only a failed saga can be resolved, not resolved" in text
    assert [e.new_status for e in operator_events(saga.pk)] == ["resolved"]


@pytest.mark.parametrize("reason", ["", "   "])
def test_action_needs_a_reason(admin_client: Client, reason: str) -> None:
    # given
    saga = failed_saga("order:1")
    before = snapshot(saga.pk)

    # when
    response = admin_client.post(
        CHANGELIST, confirm_post(saga.pk, "resolve", reason=reason)
    )

    # then
    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert snapshot(saga.pk) == before


def test_action_is_recorded_in_the_admin_history(admin_client: Client) -> None:
    # given
    saga = failed_saga("order:1")

    # when
    admin_client.post(CHANGELIST, confirm_post(saga.pk, "resolve", reason=REASON))
    history = admin_client.get(f"/admin/sagas/saga/{saga.pk}/history/")

    # then
    entry = LogEntry.objects.get()
    assert entry.object_id == str(saga.pk)
    assert entry.get_change_message() == f"Mark resolved: {REASON}"
    assert REASON in history.content.decode()


def test_action_on_a_saga_whose_step_is_running_is_refused(
    admin_client: Client,
) -> None:
    # given: another transaction holds the saga's row lock, as a worker
    # executing a step does
    saga = failed_saga("order:1")
    before = snapshot(saga.pk)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                Saga.objects.select_for_update().get(pk=saga.pk)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(30)

    # when
    try:
        response = admin_client.post(
            CHANGELIST, confirm_post(saga.pk, "retry", reason=REASON), follow=True
        )
    finally:
        release.set()
        holder.join()

    # then
    [(level, text)] = _messages(response)
    assert level == "error"
    assert "executing right now" in text
    assert snapshot(saga.pk) == before


def _bulk(client: Client, action: str, sagas: list[Saga], **extra: str) -> Any:
    return client.post(
        CHANGELIST,
        {
            "action": f"{action}_selected",
            "_selected_action": [str(saga.pk) for saga in sagas],
            **extra,
        },
        follow=True,
    )


def test_bulk_action_asks_for_a_reason_before_acting(admin_client: Client) -> None:
    # given
    sagas = [failed_saga("order:1"), failed_saga("order:2")]
    before = [snapshot(saga.pk) for saga in sagas]

    # when
    chosen = _bulk(admin_client, "resolve", sagas)
    no_reason = _bulk(admin_client, "resolve", sagas, post="yes", reason="")

    # then
    assert chosen.status_code == 200
    assert chosen.templates[0].name == "admin/sagas/saga/operator_action.html"
    html = chosen.content.decode()
    assert all(str(saga.pk) in html for saga in sagas)
    assert 'name="reason"' in html
    assert no_reason.context["form"].errors == {"reason": ["This field is required."]}
    assert [snapshot(saga.pk) for saga in sagas] == before


def test_bulk_action_applies_where_it_fits_and_reports_the_rest(
    admin_client: Client,
) -> None:
    # given
    failed = [failed_saga("order:1"), failed_saga("order:2")]
    done = completed_saga("order:3")
    done_before = snapshot(done.pk)

    # when
    response = _bulk(
        admin_client, "resolve", [*failed, done], post="yes", reason=REASON
    )

    # then
    assert response.redirect_chain == [(CHANGELIST, 302)]
    statuses = {s.business_key: s.status for s in Saga.objects.all()}
    assert statuses == {
        "order:1": "resolved",
        "order:2": "resolved",
        "order:3": "completed",
    }
    assert snapshot(done.pk) == done_before
    messages = _messages(response)
    assert ("success", "Marked resolved for 2 saga(s).") in messages
    [warning] = [text for level, text in messages if level == "warning"]
    assert "refused for 1 saga(s)" in warning
    assert "order:3: only a failed saga can be resolved, not completed" in warning
    for saga in failed:
        [event] = [e for e in operator_events(saga.pk) if e.new_status == "resolved"]
        assert (event.actor, event.detail) == ("operator:admin", f"resolved: {REASON}")


def test_bulk_action_refuses_a_selection_over_the_limit(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given
    monkeypatch.setattr("sagas.admin.actions.BULK_LIMIT", 2)
    sagas = [failed_saga(f"order:{n}") for n in range(3)]
    before = [snapshot(saga.pk) for saga in sagas]

    # when
    response = _bulk(admin_client, "resolve", sagas, post="yes", reason=REASON)

    # then
    [(level, text)] = _messages(response)
    assert level == "error"
    assert "at most 2 sagas" in text
    assert [snapshot(saga.pk) for saga in sagas] == before


@pytest.mark.parametrize(
    "saga_id", ["2b1f0c7e-0000-4000-8000-000000000000", "not-a-saga-id"]
)
@pytest.mark.parametrize("confirmed", [False, True])
def test_action_on_an_unknown_saga_redirects_with_a_message(
    admin_client: Client, saga_id: str, confirmed: bool
) -> None:
    # given
    post = confirm_post if confirmed else button_post

    # when
    response = admin_client.post(
        CHANGELIST, post(saga_id, "retry", reason=REASON), follow=True
    )

    # then
    assert response.redirect_chain == [(CHANGELIST, 302)]
    [(level, text)] = _messages(response)
    assert level == "warning"
    assert f"no saga with id '{saga_id}'" in text
    assert not Saga.objects.exists()
