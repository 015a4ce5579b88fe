"""The saga admin: a read-only console over the engine's operator verbs."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html

from sagas.admin.actions import OperatorActionsAdmin
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
from sagas.admin.related import related_rows
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


@admin.register(Saga)
class SagaAdmin(OperatorActionsAdmin):
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
    # The status counts above the list stand in for facets, which would count
    # every filter option over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 50
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

    class Media:
        css = {"all": ("sagas/admin/sagas.css",)}

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

    # --- pages ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        return [
            path(
                "versions/",
                self.admin_site.admin_view(self.versions_view),
                name=f"{opts.app_label}_{opts.model_name}_versions",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if request.method != "POST":
            # A POST runs an action, which answers with its own page.
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
                **self.operator_buttons(request, obj),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

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
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sagas/saga/versions.html", context)
