# Developer entry points. Everything runs from the virtualenv in .venv; the
# test and bench targets get throwaway PostgreSQL and Redis servers from
# scripts/services.py (installed with apt-get when missing).

PYTHON ?= python3
PY := .venv/bin/python
PIP := .venv/bin/pip
PYTEST_ARGS ?=

# Use sudo for apt-get only when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

.PHONY: venv browsers test-tools test test-embedded demo bench bench-broker lint clean

venv: .venv/.installed

# Re-install whenever pyproject.toml changes.
.venv/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv .venv
	$(PIP) install -e '.[dev]'
	touch $@

browsers:
	@if [ ! -x /usr/bin/chromium ]; then \
		$(APT_GET) update && $(APT_GET) install -y chromium; \
	fi

# faketime runs a worker with a skewed clock in the clock-skew tests.
test-tools: browsers
	@if ! command -v faketime >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y faketime; \
	fi

# Two sessions: PostgreSQL + Redis, then the embedded default (SQLite files and
# the filesystem broker, no services) for the suites that must hold on it too.
EMBEDDED_TESTS := tests/test_embedded.py tests/test_testing_kit.py \
	tests/test_sweeper_health.py tests/test_transport.py \
	tests/test_choreography_embedded.py examples

test: venv test-tools
	$(PY) scripts/services.py run -- .venv/bin/pytest -m "not embedded" $(PYTEST_ARGS)
	$(MAKE) test-embedded

test-embedded: venv
	env -u DATABASE_URL -u SANDBOX_DATABASE_URL -u CELERY_BROKER_URL \
		.venv/bin/pytest $(EMBEDDED_TESTS) $(PYTEST_ARGS)

demo: venv
	$(PY) manage.py demo

bench: venv
	$(PY) scripts/services.py run -- $(PY) -m bench

# The embedded broker: kombu's stock filesystem transport against the atomic one.
bench-broker: venv
	$(PY) -m bench.broker

# import-linter keeps sagas free of domain apps and the engine layered;
# scripts/lint_engine.py keeps status writes in the state machine.
lint: venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .
	.venv/bin/lint-imports
	$(PY) scripts/lint_engine.py

clean:
	rm -rf var/
