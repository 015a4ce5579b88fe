"""The operator console: sagas in the Django admin, and links to domain rows.

A project's admin modules call ``register_related`` so that a saga's page
lists the rows its steps wrote, and may base their admins for such rows on
``SagaRecordAdmin`` (view-only, with a link back to the saga), or other rows
that only code writes on ``ViewOnlyAdmin``.
"""

from __future__ import annotations

from sagas.admin.related import (
    SagaRecordAdmin,
    register_related,
    saga_change_url,
    unregister_related,
)
from sagas.admin.saga import SagaAdmin
from sagas.admin.viewonly import ViewOnlyAdmin
from sagas.idempotency import saga_id_from_key

__all__ = [
    "SagaAdmin",
    "SagaRecordAdmin",
    "ViewOnlyAdmin",
    "register_related",
    "saga_change_url",
    "saga_id_from_key",
    "unregister_related",
]
