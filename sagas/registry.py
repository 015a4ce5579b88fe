"""The process-wide table of saga definitions, keyed by (name, version).

A saga runs the version it started with. Deploying a change to a definition
means registering it under a new version and keeping the old one in the code,
marked ``retired=True``, until its sagas have drained: new sagas start on the
newest version that is not retired.
"""

from __future__ import annotations

from importlib import import_module

from django.utils.module_loading import autodiscover_modules

from sagas import conf
from sagas.definition import SagaDefinition
from sagas.errors import DefinitionError

_definitions: dict[tuple[str, int], SagaDefinition] = {}


def register(definition: SagaDefinition) -> SagaDefinition:
    """Validate and register ``definition``; return it for module-level use."""
    definition.validate()
    key = (definition.name, definition.version)
    existing = _definitions.get(key)
    if existing is not None and existing is not definition:
        raise DefinitionError(
            f"saga {definition.name!r} version {definition.version} is registered "
            "twice; give the changed definition a new version"
        )
    _definitions[key] = definition
    return definition


def unregister(name: str, version: int | None = None) -> None:
    """Remove one version of a definition, or all of them (test suites)."""
    for key in [k for k in _definitions if k[0] == name]:
        if version is None or key[1] == version:
            del _definitions[key]


def get(name: str, version: int | None = None) -> SagaDefinition:
    """Return the definition ``name`` at ``version``, by default the one to start.

    Without a version, return the newest version that is not retired.
    """
    if version is not None:
        found = find(name, version)
        if found is None:
            raise DefinitionError(
                f"no saga definition {name!r} version {version} in this code base"
            )
        return found
    candidates = versions(name)
    if not candidates:
        raise DefinitionError(f"no saga definition named {name!r}")
    live = [definition for definition in candidates if not definition.retired]
    if not live:
        raise DefinitionError(
            f"every version of saga {name!r} is retired: register a new version"
        )
    return live[-1]


def find(name: str, version: int) -> SagaDefinition | None:
    """Return the definition ``name`` at ``version``, or None if it is not in code."""
    return _definitions.get((name, version))


def versions(name: str) -> list[SagaDefinition]:
    """Return every registered version of ``name``, oldest first."""
    return [
        _definitions[key] for key in sorted(k for k in _definitions if k[0] == name)
    ]


def names() -> list[str]:
    """Return the registered definition names, sorted."""
    return sorted({name for name, _ in _definitions})


def definitions() -> list[SagaDefinition]:
    """Return every registered definition, by name then version."""
    return [_definitions[key] for key in sorted(_definitions)]


def autodiscover() -> None:
    """Import ``sagas`` modules of installed apps, then SAGAS_DEFINITION_MODULES."""
    autodiscover_modules("sagas")
    for module in conf.value("SAGAS_DEFINITION_MODULES"):
        import_module(module)
