"""Changelist pieces that stay fast on a table of millions of sagas."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils.functional import cached_property

from sagas import conf, registry
from sagas.models import Saga, StepAttempt
from sagas.selectors import stuck_sagas
from sagas.states import SagaStatus


class DefinitionFilter(admin.SimpleListFilter):
    """Filter by definition, listing the registered ones.

    Django's default field filter would run ``SELECT DISTINCT definition`` over
    the whole table on every changelist load.
    """

    title = "definition"
    parameter_name = "definition"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [(name, name) for name in registry.names()]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Saga]
    ) -> QuerySet[Saga]:
        if self.value():
            return queryset.filter(definition=self.value())
        return queryset


class StuckFilter(admin.SimpleListFilter):
    """Filter sagas an operator should look at, naming each reason.

    A saga counts as stuck when it is active but has made no progress for
    ``SAGAS_STUCK_AFTER`` seconds, or when it is parked ``failed``; the list
    then shows a "stuck because" column.
    """

    title = "stuck"
    parameter_name = "stuck"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        idle = f"{conf.get('SAGAS_STUCK_AFTER'):g}"
        return [
            ("yes", "Stuck or failed"),
            ("idle", f"Active, no progress for {idle} s"),
            ("failed", "Failed: an operator must act"),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Saga]
    ) -> QuerySet[Saga]:
        if self.value() == "yes":
            return queryset & stuck_sagas()
        if self.value() == "idle":
            return (queryset & stuck_sagas()).exclude(status=SagaStatus.FAILED)
        if self.value() == "failed":
            return queryset.filter(status=SagaStatus.FAILED)
        return queryset


def search_sagas(queryset: QuerySet[Saga], term: str) -> QuerySet[Saga]:
    """Match an exact saga id, or a business key exactly or by prefix.

    Both lookups are served by indexes (the primary key; the business key's
    unique index and, on PostgreSQL, its ``varchar_pattern_ops`` twin), unlike
    the admin's default ``icontains``, which scans the table.
    """
    term = term.strip()
    if not term:
        return queryset
    condition = Q(business_key__startswith=term)
    with contextlib.suppress(ValueError):
        condition |= Q(pk=uuid.UUID(term))
    return queryset.filter(condition)


class EstimatedCountPaginator(Paginator):
    """Take an unfiltered large table's size from PostgreSQL's statistics.

    ``COUNT(*)`` reads every row (or index entry): seconds on millions of
    sagas. Filtered lists are counted exactly, as the filters narrow them.
    """

    # Below this many rows counting is cheap, and the estimate of a small,
    # fast-changing table is often stale.
    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        estimate = self._estimate()
        if estimate is not None and estimate >= self.exact_below:
            return estimate
        return super().count

    def _estimate(self) -> int | None:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or queryset.query.where:
            return None
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [table],
            )
            row = cursor.fetchone()
        # reltuples is -1 until the table is first vacuumed or analysed.
        return int(row[0]) if row and row[0] >= 0 else None


class SagaChangeList(ChangeList):
    """Load only what the list shows, and count each row's attempts."""

    def get_queryset(
        self, request: HttpRequest, exclude_parameters: list[str | None] | None = None
    ) -> QuerySet[Saga]:
        # A correlated count per displayed row (served by the attempts' saga
        # index), not a JOIN and GROUP BY over the whole table.
        attempts = (
            StepAttempt.objects.filter(saga=OuterRef("pk"))
            .order_by()
            .values("saga")
            .annotate(n=Count("pk"))
            .values("n")
        )
        deferred = ["context", "current_attempt__result", "current_attempt__error"]
        if not request.GET.get(StuckFilter.parameter_name):
            # The "stuck because" column quotes a failed saga's error.
            deferred += ["error", "last_error"]
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer(*deferred)
            .annotate(attempt_count=Coalesce(Subquery(attempts), 0))
        )
