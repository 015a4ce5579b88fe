"""Signals the engine sends once its changes are committed.

Receivers run after COMMIT in the process that made the change (a worker, the
sweeper, a web request): use them for metrics, traces and notifications, never
for business writes that must be atomic with the saga (use definition hooks).
A receiver that raises is logged and ignored.

``saga_transition`` is sent once per recorded status change (each ``SagaEvent``)
with keyword arguments ``saga_id`` (str), ``definition``, ``version``, ``step``
("" for the saga itself), ``kind`` ("action", "compensation" or ""), ``attempt``
(number or None), ``old_status`` ("" when created), ``new_status``, ``actor`` and
``detail``; ``age`` is the saga's age in seconds by the database clock when its
transaction began (None when unknown; metrics read it from the row then).

``step_ran`` is sent once per executed step action or compensation, after its
outcome is recorded, with ``saga_id``, ``definition``, ``version``, ``step``,
``step_kind`` ("compensatable", "pivot", "retriable"), ``kind``, ``attempt``,
``outcome`` ("succeeded", "failed", "timed_out"), ``duration`` (seconds the
function ran, measured by the worker) and ``lag`` (seconds from dispatch to
start by the database clock, or None).
"""

from __future__ import annotations

from django.dispatch import Signal

saga_transition = Signal()
step_ran = Signal()
