# Developer entry points. Everything runs from the virtualenv in .venv; the
# test and bench targets get throwaway PostgreSQL and Redis (and, for tests,
# RabbitMQ) servers from scripts/services.py (installed with apt-get when missing).

PYTHON ?= python3
PY := .venv/bin/python
PIP := .venv/bin/pip
PYTEST_ARGS ?=

# Use sudo for apt-get only when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

.PHONY: venv lock browsers test-tools test demo bench lint clean

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

# faketime runs a worker with a skewed clock in the clock-skew tests.
test-tools: browsers
	@if ! command -v faketime >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y faketime; \
	fi

# RabbitMQ joins PostgreSQL and Redis: the chaos suite runs on both brokers.
test: venv test-tools
	$(PY) scripts/services.py run --rabbitmq -- .venv/bin/pytest $(PYTEST_ARGS)

# The demo runs on loopback over plain HTTP, with DEBUG unless told otherwise.
demo: venv
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py demo

bench: venv
	$(PY) scripts/services.py run -- $(PY) -m bench

lint: venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

clean:
	rm -rf var/
