"""`make lint` guards the engine's boundaries: these tests show it bites."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sagas", "orders", "inventory", "payments", "shipping", "config")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """Copy the packages and the lint configuration into a scratch checkout."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def lint_engine(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lint_engine.py"), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_checkout_as_it_is_passes_both_checks(checkout: Path) -> None:
    assert lint_imports(checkout).returncode == 0, lint_imports(checkout).stdout
    assert lint_engine(checkout).returncode == 0, lint_engine(checkout).stdout


def test_sagas_importing_a_domain_app_breaks_the_contract(checkout: Path) -> None:
    selectors = checkout / "sagas" / "selectors.py"
    selectors.write_text(selectors.read_text() + "\nfrom orders.models import Order\n")

    result = lint_imports(checkout)

    assert result.returncode == 1
    assert "sagas is a library" in result.stdout
    assert "BROKEN" in result.stdout


def test_an_engine_verb_importing_another_breaks_the_layers(checkout: Path) -> None:
    sweeper = checkout / "sagas" / "engine" / "sweeper.py"
    sweeper.write_text(sweeper.read_text() + "\nfrom sagas.engine import operators\n")

    result = lint_imports(checkout)

    assert result.returncode == 1
    assert "engine verbs stand on the state machine" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("sagas/selectors.py", "saga.status = 'completed'"),
        ("sagas/engine/operators.py", "Saga.objects.filter(pk=1).update(status='x')"),
        ("sagas/testing.py", "attempt.save(update_fields=['status'])"),
    ],
)
def test_a_status_written_outside_the_state_machine_is_reported(
    checkout: Path, module: str, line: str
) -> None:
    path = checkout / module
    path.write_text(
        path.read_text() + f"\n\ndef offend(saga, attempt, Saga):\n    {line}\n"
    )

    result = lint_engine(checkout)

    assert result.returncode == 1
    assert module in result.stdout


def test_a_private_name_imported_across_modules_is_reported(checkout: Path) -> None:
    path = checkout / "sagas" / "engine" / "sweeper.py"
    path.write_text(path.read_text() + "\nfrom sagas.engine.machine import _close\n")

    result = lint_engine(checkout)

    assert result.returncode == 1
    assert "imports private sagas.engine.machine._close" in result.stdout
