"""Choreographed flows in the admin, beside the orchestrated sagas.

Read-only: a flow has no coordinator to send a verb to. Filters and search
match the saga list: status, flow type, stuck; an exact id or a business key.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from sagas.admin.viewonly import ViewOnlyAdmin
from sagas.events.flows import flow_names
from sagas.events.models import Flow, FlowEvent, FlowStatus, OutboxEvent


class FlowTypeFilter(admin.SimpleListFilter):
    """Filter by flow type, listing the declared ones (no DISTINCT scan)."""

    title = "flow type"
    parameter_name = "flow_type"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [(name, name) for name in flow_names()]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Flow]
    ) -> QuerySet[Flow]:
        if self.value():
            return queryset.filter(flow_type=self.value())
        return queryset


class StuckFilter(admin.SimpleListFilter):
    """Flows that heard nothing within their timeout."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", "Stuck"), ("no", "Not stuck")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Flow]
    ) -> QuerySet[Flow]:
        if self.value() == "yes":
            return queryset.filter(status=FlowStatus.STUCK)
        if self.value() == "no":
            return queryset.exclude(status=FlowStatus.STUCK)
        return queryset


class FlowEventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = FlowEvent
    fields = ("occurred_at", "event_type", "event_id", "payload_json", "recorded_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("occurred_at", "id")
    verbose_name = "event"
    verbose_name_plural = "timeline"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="payload")
    def payload_json(self, obj: FlowEvent) -> str:
        return json.dumps(obj.payload, cls=DjangoJSONEncoder, sort_keys=True)


@admin.register(Flow)
class FlowAdmin(ViewOnlyAdmin):
    list_display = (
        "short_id",
        "flow_type",
        "business_key",
        "status",
        "last_event_type",
        "event_count",
        "started_at",
        "last_event_at",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", FlowTypeFilter, StuckFilter)
    search_fields = ("business_key",)
    search_help_text = "A flow id (exact), or a business key (exact or its start)."
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    fields = (
        "id",
        "flow_type",
        "business_key",
        "status",
        "last_event_type",
        "event_count",
        "started_at",
        "last_event_at",
        "deadline",
        "stuck_since",
        "finished_at",
    )
    inlines = [FlowEventInline]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Flow], search_term: str
    ) -> tuple[QuerySet[Flow], bool]:
        # An exact id or a key prefix: both served by indexes, unlike icontains.
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(business_key__startswith=term)
        with contextlib.suppress(ValueError):
            condition |= Q(pk=uuid.UUID(term))
        return queryset.filter(condition), False

    @admin.display(description="id")
    def short_id(self, obj: Flow) -> str:
        return format_html("<code>{}</code>", str(obj.pk)[:8])


@admin.register(OutboxEvent)
class OutboxEventAdmin(ViewOnlyAdmin):
    list_display = ("id", "event_type", "correlation_id", "created_at", "sent_at")
    list_filter = (("sent_at", admin.EmptyFieldListFilter), "event_type")
    search_fields = ("event_type",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OutboxEvent], search_term: str
    ) -> tuple[QuerySet[OutboxEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(event_type=term)
        with contextlib.suppress(ValueError):
            condition |= Q(pk=uuid.UUID(term)) | Q(correlation_id=uuid.UUID(term))
        return queryset.filter(condition), False
