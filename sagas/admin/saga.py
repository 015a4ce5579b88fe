"""The saga admin: a read-only console over the engine's operator verbs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from sagas.admin.changelist import (
    DefinitionFilter,
    EstimatedCountPaginator,
    SagaChangeList,
    StuckFilter,
    search_sagas,
)
from sagas.admin.detail import (
    attempt_history,
    current_step_name,
    event_history,
    step_nodes,
    time_since,
)
from sagas.admin.operator import (
    ACTIONS,
    ACTIONS_BY_BULK_NAME,
    ACTIONS_BY_NAME,
    BULK_LIMIT,
    OperatorAction,
    apply_to_many,
    bulk_report,
)
from sagas.admin.related import related_rows
from sagas.errors import DefinitionError, OperatorActionRefused
from sagas.models import Saga
from sagas.redaction import redacted_context
from sagas.selectors import (
    status_counts,
    stuck_reason,
    sweeper_health,
    versions_in_flight,
)
from sagas.states import ACTIVE_SAGA_STATUSES, SagaStatus
from sagas.templatetags.saga_admin import saga_badge


def _bulk_action(action: OperatorAction) -> Callable[..., Any]:
    def run(
        model_admin: SagaAdmin, request: HttpRequest, queryset: QuerySet[Saga]
    ) -> TemplateResponse | None:
        return model_admin.run_bulk_action(request, queryset, action)

    run.__name__ = action.bulk_name
    return admin.action(
        description=f"{action.label}: selected sagas", permissions=[action.name]
    )(run)


@admin.register(Saga)
class SagaAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "definition",
        "business_key",
        "status_badge",
        "current_step_display",
        "attempt_count",
        "age",
        "last_change",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", DefinitionFilter, StuckFilter)
    list_select_related = ("current_attempt",)
    # Only columns an index can sort a million rows by.
    sortable_by = ("business_key", "age")
    # The search itself is ``search_sagas``; a search field makes the box show.
    search_fields = ("business_key",)
    search_help_text = "A saga id (exact), or a business key (exact or its start)."
    show_full_result_count = False
    # The status counts above the list stand in for facets, which would count
    # every filter option over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = [_bulk_action(action) for action in ACTIONS]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "definition_version",
                    "business_key",
                    "status_badge",
                    "current_step_display",
                    "created_at",
                    "updated_at",
                    "finished_at",
                    "wake_at",
                )
            },
        ),
        ("Failure", {"fields": ("failed_step", "error", "last_error")}),
        ("Context", {"fields": ("context_json",)}),
    )
    readonly_fields = (
        "id",
        "definition_version",
        "business_key",
        "status_badge",
        "current_step_display",
        "created_at",
        "updated_at",
        "finished_at",
        "wake_at",
        "failed_step",
        "error",
        "last_error",
        "context_json",
    )

    # --- queries --------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Saga]:
        return super().get_queryset(request).select_related("current_attempt")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SagaChangeList

    def get_list_display(self, request: HttpRequest) -> Any:
        # Filtering on "stuck" shows why each saga counts as stuck.
        if request.GET.get(StuckFilter.parameter_name):
            return (*self.list_display, "stuck_because")
        return self.list_display

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Saga], search_term: str
    ) -> tuple[QuerySet[Saga], bool]:
        return search_sagas(queryset, search_term), False

    # --- columns and fields ---------------------------------------------------

    @admin.display(description="id")
    def short_id(self, obj: Saga) -> str:
        return format_html('<span title="{}">{}</span>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="status")
    def status_badge(self, obj: Saga) -> str:
        return saga_badge(obj.status)

    @admin.display(description="current step")
    def current_step_display(self, obj: Saga) -> str:
        name = current_step_name(obj)
        attempt = obj.current_attempt
        if not name or attempt is None:
            return name or "-"
        return f"{name} ({attempt.kind} #{attempt.number}, {attempt.status})"

    @admin.display(description="attempts")
    def attempt_count(self, obj: Saga) -> int | str:
        # Annotated by SagaChangeList; not loaded elsewhere.
        return getattr(obj, "attempt_count", "-")

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Saga) -> str:
        return time_since(obj.created_at)

    @admin.display(description="last change")
    def last_change(self, obj: Saga) -> str:
        return format_html(
            '<span title="{}">{} ago</span>', obj.updated_at, time_since(obj.updated_at)
        )

    @admin.display(description="stuck because")
    def stuck_because(self, obj: Saga) -> str:
        return stuck_reason(obj) or "-"

    @admin.display(description="definition")
    def definition_version(self, obj: Saga) -> str:
        return f"{obj.definition} (version {obj.version})"

    @admin.display(description="context")
    def context_json(self, obj: Saga) -> str:
        context = redacted_context(obj.definition, obj.context)
        text = json.dumps(context, indent=2, sort_keys=True, cls=DjangoJSONEncoder)
        return format_html('<pre class="saga-json">{}</pre>', text)

    # --- permissions ----------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only the engine changes a saga; operators act through the verbs below.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def may_act(self, request: HttpRequest, action: OperatorAction) -> bool:
        """Return True if the user holds the permission for ``action``."""
        return bool(request.user.has_perm(f"{self.opts.app_label}.{action.codename}"))

    # ``allowed_permissions`` of the bulk actions look these up by name.
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
        operator_urls = [
            path(
                "versions/",
                self.admin_site.admin_view(self.versions_view),
                name=f"{opts.app_label}_{opts.model_name}_versions",
            ),
        ] + [
            path(
                f"<path:object_id>/{action.name}/",
                self.admin_site.admin_view(self._operator_view(action)),
                name=f"{opts.app_label}_{opts.model_name}_{action.name}",
            )
            for action in ACTIONS
        ]
        return operator_urls + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            # A bulk action the user may not run was never offered to them:
            # a request naming it is forged, not a slip.
            for name in request.POST.getlist("action"):
                action = ACTIONS_BY_BULK_NAME.get(name)
                if action is not None and not self.may_act(request, action):
                    raise PermissionDenied
        context = dict(extra_context or {})
        if request.method != "POST":
            # A POST runs a bulk action, which answers with its own page.
            counts = status_counts()
            context["sweeper_health"] = sweeper_health(
                active_sagas=any(counts.get(s) for s in ACTIVE_SAGA_STATUSES)
            )
            context["status_counts"] = [
                (value, label, counts.get(value, 0))
                for value, label in SagaStatus.choices
            ]
            context["versions_url"] = self._url("versions")
        return super().changelist_view(request, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Saga | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(
                steps=step_nodes(obj),
                attempts=attempt_history(obj),
                events=event_history(obj),
                related=related_rows(request, self.admin_site, obj.pk),
                operator_buttons=[
                    (action, self._url(action.name, obj))
                    for action in ACTIONS
                    if obj.status in action.offered_in and self.may_act(request, action)
                ],
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _url(self, name: str, obj: Saga | None = None) -> str:
        """Return the URL of this admin's page ``name`` (of ``obj``, if given)."""
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}",
            args=[quote(obj.pk)] if obj is not None else [],
        )

    def _operator_view(
        self, action: OperatorAction
    ) -> Callable[[HttpRequest, str], HttpResponse]:
        @require_http_methods(["GET", "POST"])
        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            return self.operator_action_view(request, object_id, action)

        return view

    def operator_action_view(
        self, request: HttpRequest, object_id: str, action: OperatorAction
    ) -> HttpResponse:
        """Ask for a reason (GET); apply ``action`` through the engine (POST)."""
        if not self.may_act(request, action):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            self.message_user(
                request, f"There is no saga with id {object_id!r}.", messages.WARNING
            )
            return HttpResponseRedirect(self._url("changelist"))
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        form = action.form(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            self._apply(request, obj, action, form.cleaned_data)
            return HttpResponseRedirect(self._url("change", obj))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{action.label}: {obj.business_key}",
            "subtitle": None,
            "original": obj,
            "action": action,
            "form": form,
            "offered": obj.status in action.offered_in,
            "current_step": current_step_name(obj),
            "status_badge": saga_badge(obj.status),
            "change_url": self._url("change", obj),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/sagas/saga/operator_action.html", context
        )

    def versions_view(self, request: HttpRequest) -> HttpResponse:
        """List sagas in flight per definition version; flag versions not in code."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Definition versions in flight",
            "subtitle": None,
            "versions": versions_in_flight(),
            "changelist_url": self._url("changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sagas/saga/versions.html", context)

    def _apply(
        self,
        request: HttpRequest,
        obj: Saga,
        action: OperatorAction,
        fields: dict[str, Any],
    ) -> None:
        reason = fields["reason"]
        try:
            action.run(obj.pk, actor=request.user.get_username(), **fields)
        except (OperatorActionRefused, DefinitionError) as exc:
            self.message_user(
                request,
                f"{action.label} refused: {exc}. Nothing was changed.",
                messages.ERROR,
            )
            return
        self.log_change(request, obj, f"{action.label}: {reason}")
        self.message_user(
            request, f"{action.done}: {obj.business_key}.", messages.SUCCESS
        )

    def run_bulk_action(
        self, request: HttpRequest, queryset: QuerySet[Saga], action: OperatorAction
    ) -> TemplateResponse | None:
        """Confirm a bulk action with a reason, then apply it saga by saga."""
        sagas = list(queryset.order_by("pk")[: BULK_LIMIT + 1])
        if len(sagas) > BULK_LIMIT:
            self.message_user(
                request,
                f"Select at most {BULK_LIMIT} sagas for one action; "
                "narrow the list with the filters.",
                messages.ERROR,
            )
            return None
        confirmed = request.POST.get("post") == "yes"
        form = action.form(request.POST if confirmed else None)
        if form.is_bound and form.is_valid():
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
            for level, text in bulk_report(action, outcome, keys):
                self.message_user(request, text, level)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{action.label}: {len(sagas)} selected sagas",
            "subtitle": None,
            "action": action,
            "form": form,
            "sagas": [(saga, saga_badge(saga.status)) for saga in sagas],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/sagas/saga/operator_action_bulk.html", context
        )
