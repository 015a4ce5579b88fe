"""Behaviour shared by the sandbox providers."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import models

from config import sql
from config.routers import SANDBOX_ALIAS


def network_latency() -> None:
    """Sleep for ``SANDBOX_LATENCY_MS``, as a call to a remote provider would."""
    latency = getattr(settings, "SANDBOX_LATENCY_MS", 0)
    if latency:
        time.sleep(latency / 1000)


def insert_new(model: type[models.Model], unique: str, **values: Any) -> int | None:
    """Insert a provider's row unless its ``unique`` field's value is taken.

    Return the new row's id, or None when a row with that value exists (or is
    being written by a concurrent call, which this one waits for). One
    statement, in the caller's transaction on the sandbox connection; columns
    left out get their database defaults.
    """
    row = sql.insert(model, using=SANDBOX_ALIAS, unique=unique, **values)
    return None if row is None else int(row[0])
