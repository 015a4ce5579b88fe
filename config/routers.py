"""Database routing for the sandbox providers."""

from __future__ import annotations

from typing import Any

SANDBOX_ALIAS = "sandbox"


class SandboxRouter:
    """Send models marked ``sandbox_provider = True`` to the sandbox connection.

    The sandbox gateway and carrier stand for external services: their ledgers
    must not roll back with the saga step that called them.
    """

    def _is_sandbox(self, model: type[Any]) -> bool:
        return bool(getattr(model, "sandbox_provider", False))

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return SANDBOX_ALIAS if self._is_sandbox(model) else None

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return SANDBOX_ALIAS if self._is_sandbox(model) else None
