# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= pipeline_configs/maritime_ais.yaml
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
# this machine's pip config names local index folders that may not exist; pip warns once per
# package about them, which drowns real messages (errors still show and still fail the build)
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

# offline by default: nothing may reach a model hub; Prefect sends no analytics
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: install run test clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock $(PIP_QUIET)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . $(PIP_QUIET)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/tidewright run --config $(CONFIG)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
