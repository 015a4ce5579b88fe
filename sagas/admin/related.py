"""Links between sagas and the domain rows their steps write.

``sagas`` imports no domain app: a project's admin modules register the models
that carry a saga id, and the saga page lists the rows that share its id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_permission_codename
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from sagas.admin.viewonly import ViewOnlyAdmin

# Enough rows to recognise what a saga touched; the rest is one click away.
RELATED_LIMIT = 20


@dataclass(frozen=True)
class RelatedModel:
    model: type[models.Model]
    lookup: str
    label: str
    value: Callable[[UUID], Any]


@dataclass(frozen=True)
class RelatedRows:
    label: str
    rows: list[tuple[str, str | None]]
    more_url: str | None


_related: list[RelatedModel] = []


def register_related(
    model: type[models.Model],
    field: str = "saga_id",
    *,
    label: str | None = None,
    value: Callable[[UUID], Any] | None = None,
) -> None:
    """List ``model`` rows whose ``field`` matches a saga on that saga's page.

    ``field`` may carry a lookup (``"key__startswith"``); ``value`` turns the
    saga id into the value looked up (the id itself by default). Registering a
    model twice replaces the earlier registration.
    """
    entry = RelatedModel(
        model=model,
        lookup=field,
        label=label or str(model._meta.verbose_name_plural).capitalize(),
        value=value or (lambda saga_id: saga_id),
    )
    _related[:] = [r for r in _related if r.model is not model]
    _related.append(entry)


def unregister_related(model: type[models.Model]) -> None:
    """Stop listing ``model`` on saga pages."""
    _related[:] = [r for r in _related if r.model is not model]


def related_rows(
    request: HttpRequest, site: admin.AdminSite, saga_id: UUID
) -> list[RelatedRows]:
    """Return, per registered model, the rows sharing ``saga_id`` with admin links.

    Run one query per registered model, however many rows match.
    """
    sections = []
    for entry in _related:
        if not _may_view(request, site, entry.model):
            continue
        filters = {entry.lookup: entry.value(saga_id)}
        objects = list(
            entry.model._default_manager.filter(**filters)[: RELATED_LIMIT + 1]
        )
        if not objects:
            continue
        rows = [(str(obj), _change_url(site, obj)) for obj in objects[:RELATED_LIMIT]]
        more = None
        if len(objects) > RELATED_LIMIT:
            more = _changelist_url(site, entry.model, str(saga_id))
        sections.append(RelatedRows(label=entry.label, rows=rows, more_url=more))
    return sections


def _may_view(
    request: HttpRequest, site: admin.AdminSite, model: type[models.Model]
) -> bool:
    if site.is_registered(model):
        return bool(site.get_model_admin(model).has_view_permission(request))
    opts = model._meta
    codename = get_permission_codename("view", opts)
    return bool(request.user.has_perm(f"{opts.app_label}.{codename}"))


def _change_url(site: admin.AdminSite, obj: models.Model) -> str | None:
    opts = obj._meta
    try:
        return reverse(
            f"{site.name}:{opts.app_label}_{opts.model_name}_change",
            args=[quote(obj.pk)],
        )
    except NoReverseMatch:
        return None


def _changelist_url(
    site: admin.AdminSite, model: type[models.Model], term: str
) -> str | None:
    opts = model._meta
    try:
        url = reverse(f"{site.name}:{opts.app_label}_{opts.model_name}_changelist")
    except NoReverseMatch:
        return None
    return f"{url}?{urlencode({'q': term})}"


def saga_change_url(saga_id: UUID | str, site_name: str = "admin") -> str:
    """Return the admin URL of a saga's page."""
    return reverse(f"{site_name}:sagas_saga_change", args=[quote(saga_id)])


def _as_uuid(term: str) -> UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


class SagaRecordAdmin(ViewOnlyAdmin):
    """Admin for rows that saga steps write: view-only, linked to their saga.

    The engine and the domain services own these rows, so the admin never adds,
    edits or deletes them. A search term that is a UUID matches the primary key
    (when it is a UUID) or ``saga_field`` exactly, which an index serves.
    Without declared ``fields``, a row's page shows its model's fields and
    ``saga_link``.
    """

    # The column holding the saga id; None when the saga is found another way
    # (override ``saga_id_for``).
    saga_field: str | None = "saga_id"
    readonly_fields = ("saga_link",)

    def saga_id_for(self, obj: Any) -> UUID | str | None:
        """Return the id of the saga that wrote ``obj``."""
        return getattr(obj, self.saga_field) if self.saga_field else None

    @admin.display(description="saga")
    def saga_link(self, obj: models.Model) -> str:
        saga_id = self.saga_id_for(obj)
        if not saga_id:
            return "-"
        url = saga_change_url(saga_id, self.admin_site.name)
        return format_html('<a href="{}">{}</a>', url, str(saga_id)[:8])

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(
            request, queryset, search_term
        )
        term = _as_uuid(search_term)
        if term is None:
            return results, may_have_duplicates
        exact = Q()
        if isinstance(self.opts.pk, models.UUIDField):
            exact |= Q(pk=term)
        if self.saga_field:
            exact |= Q(**{self.saga_field: term})
        if not exact:
            return results, may_have_duplicates
        if not self.get_search_fields(request):
            return queryset.filter(exact), may_have_duplicates
        return queryset.filter(exact) | results, may_have_duplicates
