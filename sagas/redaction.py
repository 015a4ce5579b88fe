"""Sensitive context keys: hide them from readers, drop them once no step needs them.

A definition lists its secrets (``SagaDefinition(sensitive=("payment_token",))``).
Readers (the staff API, the admin, log lines) see ``REDACTED`` in their place
while the saga runs; when the saga finishes, the engine replaces the stored
values with ``SCRUBBED`` so the database keeps no secret it no longer needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from sagas import registry
from sagas.errors import DefinitionError

REDACTED = "[redacted]"
SCRUBBED = "[scrubbed]"


def sensitive_keys(definition: str) -> frozenset[str]:
    """Return the context keys the definition called ``definition`` declares secret."""
    try:
        return frozenset(registry.get(definition).sensitive)
    except DefinitionError:
        # A definition removed from the code: its secrets are unknown, so hide
        # every key any registered definition considers secret.
        return all_sensitive_keys()


def all_sensitive_keys() -> frozenset[str]:
    """Return the union of the sensitive keys of every registered definition."""
    keys: set[str] = set()
    for name in registry.names():
        keys.update(registry.get(name).sensitive)
    return frozenset(keys)


def redact(data: Any, keys: Iterable[str]) -> Any:
    """Return a copy of ``data`` with the value of every key in ``keys`` hidden.

    Nested mappings and lists are walked, so a secret copied into a step's
    result or a sub-document is hidden too.
    """
    hidden = frozenset(keys)
    if not hidden:
        return data
    return _walk(data, hidden, REDACTED)


def redacted_context(definition: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Return the saga context fit to show a reader."""
    return dict(redact(dict(context), sensitive_keys(definition)))


def scrubbed_context(definition: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Return the context to store once no step will read its secrets again."""
    return dict(_walk(dict(context), sensitive_keys(definition), SCRUBBED))


def _walk(data: Any, keys: frozenset[str], marker: str) -> Any:
    if isinstance(data, Mapping):
        return {
            key: (
                marker
                if key in keys and value not in (None, "")
                else _walk(value, keys, marker)
            )
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [_walk(item, keys, marker) for item in data]
    return data


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Hide every registered sensitive key in a log line (a structlog processor)."""
    keys = all_sensitive_keys()
    if not keys:
        return event_dict
    for key, value in list(event_dict.items()):
        if key in keys:
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _walk(value, keys, REDACTED)
    return event_dict
