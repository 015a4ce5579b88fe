# Developer entry points. Everything runs from the virtualenv in .venv; the
# test and bench targets get throwaway PostgreSQL and Redis servers from
# scripts/services.py (installed with apt-get when missing).

PYTHON ?= python3
PY := .venv/bin/python
PIP := .venv/bin/pip
PYTEST_ARGS ?=

# Use sudo for apt-get only when not root and sudo exists. RUNLEVEL=1 keeps
# packages from starting their services (only their tools are needed).
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -o DPkg::Lock::Timeout=300

.PHONY: venv browsers test-tools test demo bench lint clean

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

# faketime runs a worker with a skewed clock in the clock-skew tests; promtool
# (Debian's prometheus package, its service not started) tests the alert rules.
test-tools: browsers
	@if ! command -v faketime >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y faketime; \
	fi
	@if ! command -v promtool >/dev/null 2>&1; then \
		$(APT_GET) update && $(APT_GET) install -y --no-install-recommends prometheus; \
	fi

test: venv test-tools
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules_test.yml
	$(PY) scripts/services.py run -- .venv/bin/pytest $(PYTEST_ARGS)

demo: venv
	$(PY) manage.py demo

bench: venv
	$(PY) scripts/services.py run -- $(PY) -m bench

lint: venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

clean:
	rm -rf var/
