"""Celery entry points of the orders app."""

from __future__ import annotations

from celery import shared_task

from orders.outcomes import confirmations_deliver


@shared_task(name="orders.confirmations_deliver", ignore_result=True)
def confirmations_deliver_task() -> int:
    """Email confirmations whose step committed but whose email never left."""
    return confirmations_deliver()
