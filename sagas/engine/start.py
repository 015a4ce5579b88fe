"""Starting a saga inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from sagas import registry
from sagas.definition import SagaDefinition
from sagas.engine import machine
from sagas.errors import DefinitionError
from sagas.models import Saga


def saga_start(
    definition: str | SagaDefinition,
    *,
    business_key: str,
    context: dict[str, Any] | None = None,
    actor: str = machine.ENGINE,
) -> Saga:
    """Create a saga and its first attempt; send the first step after commit.

    Call it inside the transaction that writes your business rows: they commit
    together, and if the message is lost after commit the sweeper re-sends it.
    A name starts the newest version that is not retired.
    """
    if isinstance(definition, str):
        definition = registry.get(definition)
    elif registry.find(definition.name, definition.version) is not definition:
        raise DefinitionError(
            f"saga {definition.label} is not registered: register() it at start-up"
        )
    if definition.retired:
        raise DefinitionError(
            f"saga {definition.label} is retired: new sagas start on a newer version"
        )
    with transaction.atomic(savepoint=False):
        return machine.create(
            definition, business_key=business_key, context=context or {}, actor=actor
        )
