# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEPS_STAMP := $(VENV)/.deps-stamp
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

.PHONY: deps install run test compose-tool clean

# The Dockerfile runs these same two targets (deps in its own layer, install after the code).
$(DEPS_STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock $(PIP_QUIET)
	touch $(DEPS_STAMP)

$(STAMP): $(DEPS_STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . $(PIP_QUIET)
	touch $(STAMP)

deps: $(DEPS_STAMP)

install: $(STAMP)

# tests/test_compose.py validates docker-compose.yml with `docker-compose config`; Debian's
# docker-compose package does that without a Docker engine. Not installable (no root, no apt):
# the test says so and is skipped.
compose-tool:
	@command -v docker-compose >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& { apt-get install -y -q docker-compose >/dev/null 2>&1 \
		     || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q docker-compose >/dev/null 2>&1; }; }; } \
		|| echo "docker-compose is not installed and could not be (apt-get as root): tests/test_compose.py will be skipped"

run: install
	$(VENV)/bin/tidewright run --config $(CONFIG)

test: install compose-tool
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
