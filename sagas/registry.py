"""The process-wide table of saga definitions, filled at start-up."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from sagas.definition import SagaDefinition
from sagas.errors import DefinitionError

_definitions: dict[str, SagaDefinition] = {}


def register(definition: SagaDefinition) -> SagaDefinition:
    """Validate and register ``definition``; return it for module-level use."""
    definition.validate()
    existing = _definitions.get(definition.name)
    if existing is not None and existing is not definition:
        raise DefinitionError(f"saga {definition.name!r} is registered twice")
    _definitions[definition.name] = definition
    return definition


def unregister(name: str) -> None:
    """Remove a definition (test suites registering throwaway sagas)."""
    _definitions.pop(name, None)


def get(name: str) -> SagaDefinition:
    """Return the definition called ``name``."""
    try:
        return _definitions[name]
    except KeyError:
        raise DefinitionError(f"no saga definition named {name!r}") from None


def names() -> list[str]:
    """Return the registered definition names, sorted."""
    return sorted(_definitions)


def autodiscover() -> None:
    """Import ``sagas`` modules of installed apps, then SAGAS_DEFINITION_MODULES."""
    autodiscover_modules("sagas")
    for module in getattr(settings, "SAGAS_DEFINITION_MODULES", ()):
        import_module(module)
