"""Operator actions in the saga admin: one admin action per verb, one page.

Each verb in ``ACTIONS`` is an admin action, ``<verb>_selected``, run the way
Django runs ``delete_selected``: posted to the saga list for the sagas
selected there, or by the verb's button on a saga's page for that one saga,
it answers with a confirmation page asking for a reason; the confirmed post
(``post=yes``) applies the verb through the engine, saga by saga.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_safe

from sagas.admin.detail import current_step_name
from sagas.admin.operator import (
    ACTIONS,
    ACTIONS_BY_ADMIN_NAME,
    ACTIONS_BY_NAME,
    BULK_LIMIT,
    OperatorAction,
    apply_to_many,
    report,
)
from sagas.admin.viewonly import ViewOnlyAdmin
from sagas.models import Saga
from sagas.templatetags.saga_admin import saga_badge

# Posted by the buttons on a saga's page: the action returns to that page.
FROM_SAGA_PAGE = "_from_saga_page"


@dataclass(frozen=True)
class SelectedSaga:
    saga: Saga
    badge: str
    current_step: str
    # Whether the action is offered in the saga's status; the engine decides.
    offered: bool


def _admin_action(action: OperatorAction) -> Callable[..., Any]:
    def run(
        model_admin: OperatorActionsAdmin,
        request: HttpRequest,
        queryset: QuerySet[Saga],
    ) -> HttpResponse | None:
        return model_admin.operator_action(request, queryset, action)

    run.__name__ = action.admin_name
    return admin.action(
        description=f"{action.label}: selected sagas", permissions=[action.name]
    )(run)


class OperatorActionsAdmin(ViewOnlyAdmin):
    """The operator actions of the saga admin, their buttons and their page."""

    actions = [_admin_action(action) for action in ACTIONS]
    operator_action_template = "admin/sagas/saga/operator_action.html"

    # --- permissions ----------------------------------------------------------

    def may_act(self, request: HttpRequest, action: OperatorAction) -> bool:
        """Return True if the user holds the permission for ``action``."""
        return bool(request.user.has_perm(f"{self.opts.app_label}.{action.codename}"))

    # ``allowed_permissions`` of the actions look these up by name.
    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["retry"])

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["resume"])

    def has_compensate_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["compensate"])

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["resolve"])

    def has_skip_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["skip"])

    def has_migrate_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["migrate"])

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["approve"])

    def has_reject_permission(self, request: HttpRequest) -> bool:
        return self.may_act(request, ACTIONS_BY_NAME["reject"])

    # --- pages ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        # Each action used to have a page per saga: its address now leads to
        # the saga's page, where the action's button is.
        former = [
            path(
                f"<path:object_id>/{action.name}/",
                self.admin_site.admin_view(self.former_action_view),
                name=f"{opts.app_label}_{opts.model_name}_{action.name}",
            )
            for action in ACTIONS
        ]
        return former + super().get_urls()

    @method_decorator(require_safe)
    def former_action_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Redirect a former per-saga action page to the saga's page."""
        opts = self.opts
        return HttpResponseRedirect(
            reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=[object_id],
            )
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            # An action the user may not run was never offered to them:
            # a request naming it is forged, not a slip.
            for name in request.POST.getlist("action"):
                action = ACTIONS_BY_ADMIN_NAME.get(name)
                if action is not None and not self.may_act(request, action):
                    raise PermissionDenied
            selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            if not all(_is_uuid(saga_id) for saga_id in selected):
                self._no_such_sagas(request, selected)
                return HttpResponseRedirect(self._url("changelist"))
        return super().changelist_view(request, extra_context)

    def operator_buttons(self, request: HttpRequest, obj: Saga) -> dict[str, Any]:
        """Return the change form's context for the buttons of ``obj``'s page.

        Each button posts its action for this saga to the saga list.
        """
        return {
            "operator_buttons": [
                action
                for action in ACTIONS
                if obj.status in action.offered_in and self.may_act(request, action)
            ],
            "changelist_url": self._url("changelist"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "from_saga_page": FROM_SAGA_PAGE,
        }

    def _url(self, name: str, obj: Saga | None = None) -> str:
        """Return the URL of this admin's page ``name`` (of ``obj``, if given)."""
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}",
            args=[quote(obj.pk)] if obj is not None else [],
        )

    # --- the action -----------------------------------------------------------

    def operator_action(
        self, request: HttpRequest, queryset: QuerySet[Saga], action: OperatorAction
    ) -> HttpResponse | None:
        """Confirm ``action`` with a reason, then apply it saga by saga.

        The first post answers with the confirmation page; the confirmed one
        acts, each saga in its own engine transaction, and returns to the saga
        list, or to the saga's page when its button started it.
        """
        # The list defers the errors it does not show; this page shows them.
        chosen = queryset.defer(None).defer("context", "current_attempt__result")
        sagas = list(chosen.order_by("pk")[: BULK_LIMIT + 1])
        if not sagas:
            self._no_such_sagas(
                request, request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            )
            return None
        if len(sagas) > BULK_LIMIT:
            self.message_user(
                request,
                f"Select at most {BULK_LIMIT} sagas for one action; "
                "narrow the list with the filters.",
                messages.ERROR,
            )
            return None
        from_saga_page = len(sagas) == 1 and FROM_SAGA_PAGE in request.POST
        confirmed = request.POST.get("post") == "yes"
        form = action.form(request.POST if confirmed else None)
        if not (form.is_bound and form.is_valid()):
            return self._confirmation(request, sagas, action, form, from_saga_page)

        reason = form.cleaned_data["reason"]
        outcome = apply_to_many(
            action,
            [saga.pk for saga in sagas],
            actor=request.user.get_username(),
            **form.cleaned_data,
        )
        by_id = {saga.pk: saga for saga in sagas}
        for saga_id in outcome.applied:
            self.log_change(request, by_id[saga_id], f"{action.label}: {reason}")
        keys = {saga.pk: saga.business_key for saga in sagas}
        for level, text in report(action, outcome, keys):
            self.message_user(request, text, level)
        if from_saga_page:
            return HttpResponseRedirect(self._url("change", sagas[0]))
        return None

    def _confirmation(
        self,
        request: HttpRequest,
        sagas: list[Saga],
        action: OperatorAction,
        form: forms.Form,
        from_saga_page: bool,
    ) -> TemplateResponse:
        """Return the page that shows the selected sagas and asks for a reason."""
        selected = [
            SelectedSaga(
                saga=saga,
                badge=saga_badge(saga.status),
                current_step=current_step_name(saga),
                offered=saga.status in action.offered_in,
            )
            for saga in sagas
        ]
        # Any form will do, as in UserAdmin's password page; the stubs want a
        # ModelForm.
        adminform = helpers.AdminForm(
            form,  # type: ignore[arg-type]
            [(None, {"fields": list(form.fields)})],
            {},
            model_admin=self,
        )
        one = sagas[0] if len(sagas) == 1 else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{action.label}: "
            + (one.business_key if one else f"{len(sagas)} selected sagas"),
            "subtitle": None,
            "action": action,
            "form": form,
            "adminform": adminform,
            "errors": helpers.AdminErrorList(form, []),  # type: ignore[arg-type]
            "media": self.media + adminform.media,
            "sagas": selected,
            "original": one,
            "not_offered": sum(1 for row in selected if not row.offered),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "from_saga_page": FROM_SAGA_PAGE if from_saga_page else "",
            "cancel_url": self._url("change", one)
            if from_saga_page and one
            else self._url("changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.operator_action_template, context)

    def _no_such_sagas(self, request: HttpRequest, saga_ids: list[str]) -> None:
        ids = ", ".join(repr(saga_id) for saga_id in saga_ids)
        if len(saga_ids) == 1:
            text = f"There is no saga with id {ids}."
        elif saga_ids:
            text = f"There are no sagas with ids {ids}."
        else:
            text = "No saga matches the selection."
        self.message_user(request, text, messages.WARNING)


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True
