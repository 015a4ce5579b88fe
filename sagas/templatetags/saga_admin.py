"""Template helpers for the saga admin pages."""

from __future__ import annotations

from django import template
from django.apps import apps
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def saga_badge(status: str) -> SafeString:
    """Render a coloured badge for a saga or step attempt status."""
    return format_html(
        '<span class="saga-badge saga-badge--{}">{}</span>',
        status,
        status.replace("_", " "),
    )


@register.simple_tag
def field_help(model: str, field: str) -> str:
    """Return the help text of ``field`` on ``model`` (``"app_label.Model"``)."""
    return str(apps.get_model(model)._meta.get_field(field).help_text)
