"""Run an operator verb on SQLite while another connection holds the write lock.

Run as a script with DATABASE_URL pointing at a fresh SQLite file; prints one
JSON line: what the verb raised while the lock was held, how long it took,
and the saga's status once the lock was released and the verb run again.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models.functions import Now  # noqa: E402

from sagas import engine  # noqa: E402
from sagas.models import Saga  # noqa: E402


def main() -> None:
    call_command("migrate", verbosity=0)
    with transaction.atomic():
        saga = engine.saga_start("test_four_steps", business_key=f"t:{uuid.uuid4()}")
    held, release = threading.Event(), threading.Event()

    def step_in_progress() -> None:
        # A worker executing a step holds SQLite's write lock until it commits.
        with transaction.atomic():
            Saga.objects.filter(pk=saga.pk).update(updated_at=Now())
            held.set()
            release.wait(30)
        connection.close()

    worker = threading.Thread(target=step_in_progress)
    worker.start()
    held.wait(10)
    began = time.monotonic()
    try:
        engine.saga_compensate(saga.pk, actor="ann", reason="abort")
    except Exception as exc:
        raised = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    else:
        raised = ""
    waited = time.monotonic() - began
    release.set()
    worker.join()
    engine.saga_compensate(saga.pk, actor="ann", reason="abort")
    saga.refresh_from_db()
    print(json.dumps({"raised": raised, "waited": waited, "status": saga.status}))


if __name__ == "__main__":
    main()
