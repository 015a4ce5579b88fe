from __future__ import annotations

from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "sagas"
    verbose_name = "Sagas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sagas import checks, metrics, registry, tracing  # noqa: F401

        metrics.connect()
        tracing.connect()

        # Import every installed app's ``sagas`` module so that definitions
        # register themselves, as django.contrib.admin does with ``admin``.
        registry.autodiscover()
