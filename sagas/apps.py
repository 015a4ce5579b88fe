from __future__ import annotations

from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "sagas"
    verbose_name = "Sagas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import beat_embedded_init, beat_init

        from sagas import checks, metrics, registry, tracing  # noqa: F401
        from sagas.schedule import on_beat_init

        # Crash recovery must not hang on a command: beat installs its sweeper.
        for signal in (beat_init, beat_embedded_init):
            signal.connect(on_beat_init, weak=False, dispatch_uid="sagas.sweeper")

        metrics.connect()
        tracing.connect()

        # Import every installed app's ``sagas`` module so that definitions
        # register themselves, as django.contrib.admin does with ``admin``.
        registry.autodiscover()
