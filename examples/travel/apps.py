from __future__ import annotations

from django.apps import AppConfig


class TravelConfig(AppConfig):
    name = "examples.travel"
    label = "travel"
    verbose_name = "Travel (example)"
    default_auto_field = "django.db.models.BigAutoField"
