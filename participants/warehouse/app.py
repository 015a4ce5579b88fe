"""The warehouse's Celery app.

Run it with ``celery -A participants.warehouse.app worker -Q warehouse``.

Commands arrive as keyword arguments (``saga_id``, ``attempt_id``, ``step``,
``kind``, ``idempotency_key``, ``action_key``, ``reply_task``, ``data``); the
answer goes to ``reply_task`` with ``status`` completed or failed. A release
answers completed even when there was nothing to release.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from participants.warehouse import store

app = Celery("warehouse", broker=os.environ.get("CELERY_BROKER_URL", "redis://"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    task_serializer="json",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    task_default_queue="warehouse",
    worker_hijack_root_logger=False,
)
# The orchestrator's queue, where replies go.
REPLY_QUEUE = os.environ.get("WAREHOUSE_REPLY_QUEUE", "celery")


def _reply(command: dict[str, Any], **answer: Any) -> None:
    copies = 2 if os.environ.get("WAREHOUSE_DUPLICATE_REPLIES") else 1
    for _ in range(copies):
        app.send_task(
            command["reply_task"],
            kwargs={
                "saga_id": command["saga_id"],
                "attempt_id": command["attempt_id"],
                "participant": "warehouse",
                **answer,
            },
            queue=REPLY_QUEUE,
        )


def _latency() -> None:
    milliseconds = int(os.environ.get("WAREHOUSE_LATENCY_MS", "0"))
    if milliseconds:
        time.sleep(milliseconds / 1000)


@app.task(name="warehouse.reserve")
def reserve(**command: Any) -> str:
    """Reserve the command's items under its idempotency key, then answer."""
    _latency()
    items = [(sku, int(qty)) for sku, qty in command["data"]["items"]]
    try:
        state = store.reserve(command["idempotency_key"], items)
    except store.OutOfStock as exc:
        _reply(command, status="failed", error=f"Out of stock: {exc}")
        return "refused"
    if state == "void":
        # Released before it arrived: reserving now would leak stock.
        _reply(command, status="failed", error="reservation was cancelled")
        return state
    _reply(command, status="completed", result={"warehouse_reserved": True})
    return state


@app.task(name="warehouse.release")
def release(**command: Any) -> str:
    """Release what the action reserved under its key; answer in every case."""
    _latency()
    outcome = store.release(command["action_key"])
    _reply(command, status="completed", result={"released": outcome})
    return outcome
