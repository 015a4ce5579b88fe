"""Operator verbs on the embedded default (SQLite) refuse while a step executes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_operator_action_during_a_step_is_refused_not_a_500(tmp_path: Path) -> None:
    # given: a SQLite database whose write lock a step holds
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
        "SAGAS_VAR_DIR": str(tmp_path),
    }

    # when: an operator aborts the saga meanwhile, then once the step is done
    result = subprocess.run(
        [sys.executable, "-m", "tests.scripts.sqlite_operator_lock"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # then: refused like PostgreSQL's NOWAIT, well before the 20 s busy timeout
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["raised"].startswith("sagas.errors.OperatorActionRefused"), outcome
    assert "executing right now" in outcome["raised"]
    assert outcome["waited"] < 5
    assert outcome["status"] == "compensating"
