"""Sagas and users for the admin tests, made through the engine itself."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client

from sagas.engine import saga_start
from sagas.models import Saga, SagaEvent, StepAttempt
from sagas.testing import run_saga_inline
from tests.sagatest.models import Fault

TEST_SAGA = "test_four_steps"
PASSWORD = "correct horse battery staple"


def completed_saga(key: str) -> Saga:
    """Return a saga that ran its four steps."""
    saga = saga_start(TEST_SAGA, business_key=key)
    return run_saga_inline(saga.pk)


def compensated_saga(key: str) -> Saga:
    """Return a saga whose second step failed for good and that undid the first."""
    saga = saga_start(
        TEST_SAGA, business_key=key, context={"fail": {"step_two": "permanent"}}
    )
    return run_saga_inline(saga.pk)


def failed_saga(key: str) -> Saga:
    """Return a saga parked ``failed``: its first step's compensation keeps failing.

    Lower ``SAGAS_COMPENSATION_MAX_ATTEMPTS`` to park it after fewer attempts.
    """
    saga = saga_start(
        TEST_SAGA, business_key=key, context={"fail": {"step_two": "permanent"}}
    )
    Fault.objects.create(
        saga_id=saga.pk, step="step_one", kind="compensation", remaining=-1
    )
    saga = run_saga_inline(saga.pk)
    assert saga.status == "failed", saga.status
    return saga


def pending_saga(key: str) -> Saga:
    """Return a saga just started: its first attempt is dispatched, nobody runs it."""
    return saga_start(TEST_SAGA, business_key=key)


def make_user(
    username: str,
    *,
    staff: bool = True,
    superuser: bool = False,
    perms: Iterable[str] = (),
) -> User:
    """Create a user holding the ``sagas`` permissions named by codename."""
    user = User.objects.create_user(
        username, password=PASSWORD, is_staff=staff, is_superuser=superuser
    )
    codenames = list(perms)
    if codenames:
        found = list(
            Permission.objects.filter(
                content_type__app_label="sagas", codename__in=codenames
            )
        )
        assert len(found) == len(codenames), codenames
        user.user_permissions.add(*found)
    return user


def logged_in(user: User | None, **client_kwargs: Any) -> Client:
    client = Client(**client_kwargs)
    if user is not None:
        client.force_login(user)
    return client


def snapshot(saga_id: Any) -> tuple[Any, ...]:
    """Return what an operator action would change: status, rows, last update."""
    saga = Saga.objects.get(pk=saga_id)
    return (
        saga.status,
        saga.updated_at,
        saga.current_attempt_id,
        SagaEvent.objects.filter(saga_id=saga_id).count(),
        StepAttempt.objects.filter(saga_id=saga_id).count(),
    )


def operator_events(saga_id: Any) -> list[SagaEvent]:
    return list(
        SagaEvent.objects.filter(
            saga_id=saga_id, actor__startswith="operator:"
        ).order_by("id")
    )


_NODE = re.compile(r'data-step="([^"]+)" data-kind="([^"]+)" data-status="([^"]+)"')


def diagram(html: str) -> dict[tuple[str, str], str]:
    """Return the step diagram of a saga page: ``(step, kind) -> status``."""
    return {(step, kind): status for step, kind, status in _NODE.findall(html)}


_CURRENT = re.compile(
    r'class="saga-node [^"]*saga-node--current[^"]*"\s+data-step="([^"]+)" '
    r'data-kind="([^"]+)"'
)


def current_nodes(html: str) -> list[tuple[str, str]]:
    """Return the ``(step, kind)`` nodes the diagram marks as current."""
    return _CURRENT.findall(html)


def change_url(saga_id: Any) -> str:
    return f"/admin/sagas/saga/{saga_id}/change/"


def former_action_url(saga_id: Any, action: str) -> str:
    """Return the address an action's page for one saga used to have."""
    return f"/admin/sagas/saga/{saga_id}/{action}/"


CHANGELIST = "/admin/sagas/saga/"


def button_post(saga_id: Any, action: str, **fields: str) -> dict[str, Any]:
    """Return what the ``action`` button on a saga's page posts to the saga list."""
    return {
        "action": f"{action}_selected",
        "_selected_action": [str(saga_id)],
        "_from_saga_page": "1",
        **fields,
    }


def confirm_post(saga_id: Any, action: str, **fields: str) -> dict[str, Any]:
    """Return what the confirmation page of a saga page's ``action`` posts."""
    return button_post(saga_id, action, post="yes", **fields)


class _Buttons(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, Any]] = {}
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form" and "saga-action-form" in (named.get("class") or ""):
            self._form = {"url": named.get("action"), "method": named.get("method")}
            self.forms[str(named.get("data-action"))] = self._form
        elif tag == "input" and self._form is not None and named.get("name"):
            self._form[str(named["name"])] = named.get("value")
        elif tag == "button" and self._form is not None:
            self._form["button"] = named.get("class")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def operator_buttons(html: str) -> dict[str, dict[str, Any]]:
    """Return the operator buttons of a saga's page: per action, what it posts."""
    parser = _Buttons()
    parser.feed(html)
    return parser.forms
