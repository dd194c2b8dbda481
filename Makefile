# Two commands for a fresh machine (Python 3.11+ and make): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9

.PHONY: install run test lint bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --frozen --quiet

run: install
	$(VENV)/bin/pulse serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy protocol storage actors server loadtest pulse_sdk examples

# -rfEs: skipped tests are listed with their reason (PostgreSQL/Redis missing locally); CI sets
# PULSE_REQUIRE_SERVICES=1 (.ci/run), which makes a missing service a failure instead.
test: lint
	$(VENV)/bin/pytest -q -rfEs

clean:
	rm -rf $(VENV) data
