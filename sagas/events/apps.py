from __future__ import annotations

from django.apps import AppConfig


class SagaEventsConfig(AppConfig):
    name = "sagas.events"
    label = "saga_events"
    verbose_name = "Saga flows (choreography)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import beat_embedded_init, beat_init
        from django.utils.module_loading import autodiscover_modules

        from sagas.events.schedule import on_beat_init

        # Re-sending lost events must not hang on a command: beat installs it.
        for signal in (beat_init, beat_embedded_init):
            signal.connect(on_beat_init, weak=False, dispatch_uid="saga_events.sweep")

        # Each installed app's ``choreography`` module registers its handlers
        # and flows, as ``sagas`` modules register saga definitions.
        autodiscover_modules("choreography")
