"""One lock for every install: make, CI (through make) and the Dockerfile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", path.read_text(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def _declared(requirements: list[str]) -> set[str]:
    names = {re.split(r"[\[<>=!~ ]", line, maxsplit=1)[0] for line in requirements}
    return {name.lower().replace("_", "-") for name in names}


def test_every_install_uses_the_hash_checked_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()

    assert "--require-hashes -r requirements-dev.txt" in makefile
    assert "--no-deps" in makefile
    assert "--require-hashes -r requirements.txt" in dockerfile
    assert "make test" in ci
    assert not re.search(r"pip install (?!--require-hashes)[^\n]*\.\[dev\]", makefile)


def test_lock_files_pin_every_declared_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pins(ROOT / "requirements.txt")
    dev = _pins(ROOT / "requirements-dev.txt")

    assert _declared(project["dependencies"]) <= set(runtime)
    assert _declared(project["optional-dependencies"]["dev"]) <= set(dev)
    # The runtime lock is the dev lock's subset, at the same versions.
    assert {name: dev[name] for name in runtime} == runtime
    for path in ("requirements.txt", "requirements-dev.txt"):
        text = (ROOT / path).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
        unhashed = [b.split()[0] for b in blocks if "==" in b and "--hash" not in b]
        assert unhashed == [], path
