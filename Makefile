# The two commands of the README: `make run` (demo on SQLite) and `make test` (everything, on PostgreSQL).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# uv: the one on PATH, else one installed for this project in .uv/ (a system Python marked
# externally managed, PEP 668, as Debian's and Ubuntu's are, refuses `pip install` outside a
# virtual environment).
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.uv/bin/uv)
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/feedback
# The demo's address: `make run PORT=8001` when 8000 is taken.
PORT ?= 8000

.PHONY: run test lint typecheck pytest bench install install-dev lock browser screenshots clean

$(CURDIR)/.uv/bin/uv:
	$(PYTHON) -m venv .uv && .uv/bin/python -m pip install --quiet uv

$(VENV)/bin/python: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(VENV)

# Installs exactly the hashed pins; re-runs only when a lock file changes.
$(VENV)/.installed: requirements.lock | $(VENV)/bin/python
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements.lock
	@rm -f $(VENV)/.installed-dev
	@touch $@

$(VENV)/.installed-dev: requirements-dev.lock | $(VENV)/bin/python
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements-dev.lock
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

lock:
	$(UV) pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes --no-header -o requirements.lock
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.11 --generate-hashes --no-header -o requirements-dev.lock

run: install
	@$(PY) -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", $(PORT)))' 2>/dev/null \
	  || { echo "Port $(PORT) is taken: make run PORT=<another>" >&2; exit 1; }
	@DEBUG=1 DATABASE_URL=$${DEMO_DATABASE_URL:-sqlite:///var/demo.sqlite3} CELERY_BROKER_URL= SECURE_SSL_REDIRECT=0 \
	  bash -c 'set -e; $(PY) manage.py migrate --no-input -v 0 && $(PY) manage.py demo && \
	  echo "Serving http://127.0.0.1:$(PORT)/ (Ctrl+C stops)" && \
	  exec $(PY) manage.py runserver 127.0.0.1:$(PORT) --noreload'

# Debian's Chromium for the browser tests; Playwright never downloads a browser.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	DEBUG=1 $(VENV)/bin/mypy .

pytest: install-dev browser
	@$(PY) -m feedback.dbcheck "$(DATABASE_URL)"
	@DATABASE_URL=$(DATABASE_URL) $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure, not a pass."; fi; exit $$rc

test: lint typecheck pytest

# Refresh the README's screenshots from the browser tests.
screenshots: install-dev browser
	SCREENSHOTS_DIR=docs/screenshots DATABASE_URL=$(DATABASE_URL) $(VENV)/bin/pytest tests/browser/test_documents.py -q

bench: install-dev
	@$(PY) -m feedback.dbcheck "$(DATABASE_URL)"
	DATABASE_URL=$(DATABASE_URL) $(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
