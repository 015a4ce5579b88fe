"""The base of every admin over rows that only code writes."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest


class ViewOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Admin for rows that the engine or a service writes: nobody edits them here.

    Nobody adds, changes or deletes a row, and every field shown is read-only:
    the fields or fieldsets declared, else the model's own fields, then
    ``readonly_fields`` (computed ones, such as a link).
    """

    # The list counts the filtered rows only: counting a table of millions
    # again for "N total" on every page is a full scan.
    show_full_result_count = False

    def get_readonly_fields(
        self, request: HttpRequest, obj: Any = None
    ) -> list[str] | tuple[str, ...]:
        if self.fieldsets or self.fields:
            return flatten_fieldsets(self.get_fieldsets(request, obj))
        opts = self.opts
        own = [
            field.name
            for field in (*opts.concrete_fields, *opts.many_to_many)
            if not field.auto_created
        ]
        return [*own, *(f for f in self.readonly_fields if f not in own)]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
