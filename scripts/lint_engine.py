#!/usr/bin/env python3
"""Check the engine's boundaries that import-linter cannot see.

1. Only ``sagas/engine/machine.py`` writes a saga's or an attempt's status:
   no other module of ``sagas`` assigns ``.status``, passes ``status=`` to a
   model constructor, ``create``, ``update`` or ``bulk_update``, or names
   ``"status"`` in ``update_fields``. The one other writer of a status is
   ``sagas/events/tracker.py``, for the choreographed flows it derives.
2. No module imports an underscore name from another module of the project.

Usage: ``lint_engine.py [ROOT]`` (default: this checkout). Exit 1 listing
every offence as ``path:line: message``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("sagas", "orders", "inventory", "payments", "shipping", "config")
STATE_MACHINE = Path("sagas", "engine", "machine.py")
# The tracker derives choreographed flows' statuses; nothing else writes them.
STATUS_WRITERS = {STATE_MACHINE, Path("sagas", "events", "tracker.py")}
WRITERS = {"create", "update", "bulk_update", "get_or_create", "update_or_create"}
MODELS = {"Saga", "StepAttempt"}


def _status_writes(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append((node.lineno, "assigns .status"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", "")
            )
            keywords = {kw.arg for kw in node.keywords}
            if "status" in keywords and (name in WRITERS or name in MODELS):
                found.append((node.lineno, f"passes status= to {name}()"))
            for kw in node.keywords:
                if kw.arg == "update_fields" and "status" in ast.unparse(kw.value):
                    found.append((node.lineno, "saves update_fields with status"))
    return found


def _private_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(
                        (node.lineno, f"imports private {node.module}.{alias.name}")
                    )
    return found


def main(root: Path) -> int:
    offences = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if "migrations" in relative.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            checks = _private_imports(tree)
            if package == "sagas" and relative not in STATUS_WRITERS:
                checks += _status_writes(tree)
            offences += [f"{relative}:{n}: {m}" for n, m in checks]
    for offence in offences:
        print(offence)
    return 1 if offences else 0


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
