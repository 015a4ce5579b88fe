# Developer entry points. Everything runs from the virtualenv in .venv; the
# test and bench targets get throwaway PostgreSQL and Redis servers from
# tests/services.py (the chaos suite starts RabbitMQ too), installed with
# apt-get when missing (services-tools).

PYTHON ?= python3
PY := .venv/bin/python
PIP := .venv/bin/pip
PYTEST_ARGS ?=

# Use sudo for apt-get only when not root and sudo exists. RUNLEVEL=1 keeps
# packages from starting their services (only their tools are needed).
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -o DPkg::Lock::Timeout=300

.PHONY: venv lock browsers services-tools test-tools test test-embedded demo bench bench-broker lint clean

venv: .venv/.installed

# Install exactly the locked versions, hashes checked (the same lock CI and the
# Dockerfile use), then the project itself without touching its dependencies.
.venv/.installed: requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv .venv
	$(PIP) install --require-hashes -r requirements-dev.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve the lock files from pyproject.toml (after changing a dependency).
LOCK_FLAGS := --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --quiet
lock:
	test -x $(PY) || $(PYTHON) -m venv .venv
	test -x .venv/bin/pip-compile || $(PIP) install pip-tools==7.6.2
	.venv/bin/pip-compile $(LOCK_FLAGS) -o requirements.txt pyproject.toml
	.venv/bin/pip-compile $(LOCK_FLAGS) --extra dev -o requirements-dev.txt pyproject.toml

browsers:
	@if [ ! -x /usr/bin/chromium ]; then \
		$(APT_GET) update && $(APT_GET) install -y chromium; \
	fi

# pg_virtualenv (postgresql-common) makes the throwaway PostgreSQL cluster;
# redis-server and rabbitmq-server run as the test process's own children.
services-tools:
	@if ! command -v pg_virtualenv >/dev/null 2>&1 \
		|| ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
		|| ! command -v redis-server >/dev/null 2>&1 \
		|| [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends \
			postgresql postgresql-common redis-server rabbitmq-server; \
	fi

# faketime runs a worker with a skewed clock in the clock-skew tests; promtool
# (Debian's prometheus package, its service not started) tests the alert rules.
test-tools: browsers services-tools
	@if ! command -v faketime >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y faketime; \
	fi
	@if ! command -v promtool >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends prometheus; \
	fi

# Two sessions: PostgreSQL + Redis (the chaos suite also starts a RabbitMQ node
# and a Redis of its own, to restart), then the embedded default (SQLite files and
# the filesystem broker, no services) for the suites that must hold on it too.
EMBEDDED_TESTS := tests/test_embedded.py tests/test_testing_kit.py tests/test_domain_services.py tests/test_sql.py \
	tests/test_sweeper_health.py tests/test_sweeper_writes.py tests/test_transport.py \
	tests/test_choreography_embedded.py examples

test: venv test-tools
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules_test.yml
	$(PY) -m tests.services .venv/bin/pytest -m "not embedded" $(PYTEST_ARGS)
	$(MAKE) test-embedded

test-embedded: venv
	env -u DATABASE_URL -u SANDBOX_DATABASE_URL -u CELERY_BROKER_URL \
		.venv/bin/pytest $(EMBEDDED_TESTS) $(PYTEST_ARGS)

# The demo runs on loopback over plain HTTP, with DEBUG unless told otherwise.
demo: venv
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py demo

bench: venv services-tools
	$(PY) -m tests.services $(PY) -m bench

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
