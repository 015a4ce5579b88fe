"""Who may run each operator action: the whole matrix, on real PostgreSQL.

Every cell starts from a saga the action applies to, so a refusal can only
come from the permission checks, and checks that the saga is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from sagas.models import Saga, SagaEvent
from tests.admin_support import (
    CHANGELIST,
    button_post,
    change_url,
    confirm_post,
    failed_saga,
    former_action_url,
    logged_in,
    make_user,
    operator_buttons,
    operator_events,
    pending_saga,
    snapshot,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ACTIONS = ("retry", "resume", "compensate", "resolve", "skip")
# Moving a saga needs a version too: its permission is checked in
# test_admin_versions; here it only counts among the other permissions.
ALL_ACTION_PERMS = (
    *(f"{action}_saga" for action in ACTIONS),
    "migrate_saga",
    "approve_saga",
    "reject_saga",
)
REASON = "customer called, stock fixed by hand"

# Per action: a saga it applies to, and what the saga looks like once applied.
START: dict[str, Callable[[str], Saga]] = {
    "retry": failed_saga,
    "resume": pending_saga,
    "compensate": pending_saga,
    "resolve": failed_saga,
    "skip": failed_saga,
}
STATUS_AFTER = {
    # The failed compensation runs again.
    "retry": "compensating",
    # Resuming re-sends the current attempt and changes no status.
    "resume": "pending",
    "compensate": "compensating",
    "resolve": "resolved",
    # The failed compensation is recorded as done by hand; nothing is left.
    "skip": "compensated",
}
DETAIL_AFTER = {
    "retry": f"retry: {REASON}",
    "resume": f"resume: {REASON}",
    "compensate": f"aborted by operator:{{user}}: {REASON}",
    "resolve": f"resolved: {REASON}",
    "skip": f"skip step_one: {REASON}",
}


@pytest.fixture(autouse=True)
def _park_fast(settings: Any) -> None:
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1


def _user(role: str, action: str) -> User | None:
    """Return the user playing ``role`` for ``action`` (None: anonymous)."""
    others = [perm for perm in ALL_ACTION_PERMS if perm != f"{action}_saga"]
    if role == "anonymous":
        return None
    if role == "non_staff":
        # Holding every permission does not open the admin to a non-staff user.
        return make_user("visitor", staff=False, perms=["view_saga", *ALL_ACTION_PERMS])
    if role == "staff_without":
        # Every other action's permission, to catch one check standing for another.
        return make_user("viewer", perms=["view_saga", *others])
    if role == "staff_action_only":
        # The action's permission without the right to see sagas at all.
        return make_user("blind", perms=[f"{action}_saga"])
    if role == "staff_with":
        return make_user("operator", perms=["view_saga", f"{action}_saga"])
    assert role == "superuser"
    return make_user("root", superuser=True)


ROLES = ("anonymous", "non_staff", "staff_without", "staff_action_only", "staff_with")
ALLOWED = {"staff_with", "superuser"}
LOGIN_REDIRECT = {"anonymous", "non_staff"}


def _assert_acted(saga_id: Any, action: str, user: User) -> None:
    saga = Saga.objects.get(pk=saga_id)
    assert saga.status == STATUS_AFTER[action]
    events = operator_events(saga_id)
    assert {event.actor for event in events} == {f"operator:{user.username}"}
    expected = DETAIL_AFTER[action].format(user=user.username)
    assert [event.detail for event in events].count(expected) == 1


def _assert_refused(
    response: Any, role: str, before: tuple[Any, ...], saga: Saga
) -> None:
    if role in LOGIN_REDIRECT:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    else:
        assert response.status_code == 403
    assert snapshot(saga.pk) == before
    assert operator_events(saga.pk) == []


@pytest.mark.parametrize("role", [*ROLES, "superuser"])
@pytest.mark.parametrize("action", ACTIONS)
def test_action_button_post_only_asks_for_confirmation(action: str, role: str) -> None:
    # given
    saga = START[action](f"order:{action}")
    user = _user(role, action)
    before = snapshot(saga.pk)

    # when: the button's post, even with a reason, is not the confirmed one
    response = logged_in(user).post(
        CHANGELIST, button_post(saga.pk, action, reason=REASON)
    )

    # then
    if role in ALLOWED:
        assert response.status_code == 200
        assert b'name="reason"' in response.content
        assert b"csrfmiddlewaretoken" in response.content
        assert snapshot(saga.pk) == before
        assert operator_events(saga.pk) == []
    else:
        _assert_refused(response, role, before, saga)


@pytest.mark.parametrize("role", [*ROLES, "superuser"])
@pytest.mark.parametrize("action", ACTIONS)
def test_action_post_acts_only_for_holders_of_its_permission(
    action: str, role: str
) -> None:
    # given
    saga = START[action](f"order:{action}")
    user = _user(role, action)
    before = snapshot(saga.pk)

    # when
    response = logged_in(user).post(
        CHANGELIST, confirm_post(saga.pk, action, reason=REASON)
    )

    # then
    if role in ALLOWED:
        assert user is not None
        assert response.status_code == 302
        assert response["Location"] == change_url(saga.pk)
        _assert_acted(saga.pk, action, user)
    else:
        _assert_refused(response, role, before, saga)


@pytest.mark.parametrize("role", [*ROLES, "superuser"])
@pytest.mark.parametrize("action", ACTIONS)
def test_bulk_action_acts_only_for_holders_of_its_permission(
    action: str, role: str
) -> None:
    # given
    saga = START[action](f"order:{action}")
    user = _user(role, action)
    before = snapshot(saga.pk)

    # when
    response = logged_in(user).post(
        CHANGELIST,
        {
            "action": f"{action}_selected",
            "_selected_action": [str(saga.pk)],
            "post": "yes",
            "reason": REASON,
        },
    )

    # then
    if role in ALLOWED:
        assert user is not None
        assert response.status_code == 302
        assert response["Location"] == CHANGELIST
        _assert_acted(saga.pk, action, user)
    else:
        _assert_refused(response, role, before, saga)


@pytest.mark.parametrize("action", ACTIONS)
def test_bulk_action_is_offered_only_to_holders_of_its_permission(action: str) -> None:
    # given
    pending_saga("order:1")
    holder = logged_in(make_user("operator", perms=["view_saga", f"{action}_saga"]))
    others = [perm for perm in ALL_ACTION_PERMS if perm != f"{action}_saga"]
    other = logged_in(make_user("viewer", perms=["view_saga", *others]))

    # when
    offered = holder.get(CHANGELIST).content.decode()
    hidden = other.get(CHANGELIST).content.decode()

    # then
    assert f'value="{action}_selected"' in offered
    assert f'value="{action}_selected"' not in hidden


@pytest.mark.parametrize("action", ACTIONS)
def test_button_shows_only_with_the_permission(action: str) -> None:
    # given
    saga = START[action](f"order:{action}")
    holder = logged_in(make_user("operator", perms=["view_saga", f"{action}_saga"]))
    others = [perm for perm in ALL_ACTION_PERMS if perm != f"{action}_saga"]
    other = logged_in(make_user("viewer", perms=["view_saga", *others]))

    # when
    with_permission = holder.get(change_url(saga.pk)).content.decode()
    without = other.get(change_url(saga.pk)).content.decode()

    # then
    button = operator_buttons(with_permission)[action]
    assert button["url"] == CHANGELIST
    assert button["action"] == f"{action}_selected"
    assert button["_selected_action"] == str(saga.pk)
    assert action not in operator_buttons(without)
    assert f'value="{action}_selected"' not in without


def _csrf_client() -> tuple[Client, User]:
    user = make_user("operator", perms=["view_saga", *ALL_ACTION_PERMS])
    return logged_in(user, enforce_csrf_checks=True), user


@pytest.mark.parametrize("post", [button_post, confirm_post])
def test_action_post_without_csrf_token_is_refused(post: Callable[..., Any]) -> None:
    # given
    saga = failed_saga("order:csrf")
    client, _ = _csrf_client()
    before = snapshot(saga.pk)

    # when
    response = client.post(CHANGELIST, post(saga.pk, "retry", reason=REASON))

    # then
    assert response.status_code == 403
    assert snapshot(saga.pk) == before


def test_action_post_with_the_pages_csrf_token_acts() -> None:
    # given: the token the saga's page hands out with its buttons
    saga = failed_saga("order:csrf")
    client, user = _csrf_client()
    button = operator_buttons(client.get(change_url(saga.pk)).content.decode())
    token = button["retry"]["csrfmiddlewaretoken"]

    # when
    confirmed = client.post(
        CHANGELIST,
        confirm_post(saga.pk, "retry", reason=REASON, csrfmiddlewaretoken=token),
    )

    # then
    assert confirmed.status_code == 302
    assert confirmed["Location"] == change_url(saga.pk)
    _assert_acted(saga.pk, "retry", user)


def test_bulk_action_without_csrf_token_is_refused() -> None:
    # given
    saga = failed_saga("order:csrf")
    client, _ = _csrf_client()
    before = snapshot(saga.pk)

    # when
    response = client.post(
        CHANGELIST,
        {
            "action": "resolve_selected",
            "_selected_action": [str(saga.pk)],
            "post": "yes",
            "reason": REASON,
        },
    )

    # then
    assert response.status_code == 403
    assert snapshot(saga.pk) == before


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_former_action_page_only_redirects(method: str, admin_client: Client) -> None:
    # given
    saga = failed_saga("order:verbs")
    before = snapshot(saga.pk)

    # when
    response = getattr(admin_client, method)(
        former_action_url(saga.pk, "resolve"), {"reason": REASON}
    )
    shown = admin_client.get(former_action_url(saga.pk, "resolve"))

    # then
    assert response.status_code == 405
    assert shown.status_code == 302
    assert shown["Location"] == change_url(saga.pk)
    assert snapshot(saga.pk) == before
    assert not SagaEvent.objects.filter(
        saga=saga, actor__startswith="operator:"
    ).exists()
