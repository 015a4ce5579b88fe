"""Idempotency keys: ``<saga id>:<step>:<action|compensation>``.

A step passes its key to the services it calls; a compensation undoes by its
step's action key. Services store the key with what they did, so the key of
any row they wrote leads back to its saga. This module is the one place that
knows the format: it makes keys and reads them.
"""

from __future__ import annotations

from uuid import UUID

SEPARATOR = ":"
ACTION = "action"
COMPENSATION = "compensation"


def make_key(saga_id: UUID | str, step: str, kind: str = ACTION) -> str:
    """Return the key of ``step``'s action (or compensation) in saga ``saga_id``."""
    return f"{saga_id}{SEPARATOR}{step}{SEPARATOR}{kind}"


def saga_prefix(saga_id: UUID | str) -> str:
    """Return the start every key of saga ``saga_id`` shares (for ``startswith``)."""
    return f"{saga_id}{SEPARATOR}"


def saga_id_from_key(key: str) -> UUID | None:
    """Return the saga id that ``key`` holds, or None if it holds none."""
    try:
        return UUID(key.split(SEPARATOR, 1)[0].strip())
    except ValueError:
        return None
