from __future__ import annotations

import os

from django.apps import AppConfig


class SagaTestConfig(AppConfig):
    name = "tests.sagatest"
    label = "sagatest"

    def ready(self) -> None:
        if os.environ.get("SAGAS_TEST_DUPLICATE_MESSAGES") == "1":
            from tests.sagatest import chaos

            chaos.duplicate_every_step_message()
