# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
#
# The functions run on Python 3.12, so the main venv uses 3.12 where it is installed, else 3.11;
# when both are there, `make test` also runs the quick suites on 3.11 (`make test-py311`).
# An interpreter counts only if it runs: a pyenv shim for a version that is not selected does not.
PYENV_VERSIONS := $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
runnable = $(firstword $(foreach python,$(1),$(shell $(python) -c 'import sys; print(sys.executable)' 2>/dev/null)))
PYTHON312 := $(call runnable,python3.12 $(wildcard $(PYENV_VERSIONS)/3.12*/bin/python3.12))
PYTHON311 := $(call runnable,python3.11 $(wildcard $(PYENV_VERSIONS)/3.11*/bin/python3.11))
PYTHON ?= $(or $(PYTHON312),$(PYTHON311),$(shell command -v python3))
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(PYTHON_VERSION)
# The layer's lock constrains every install, so the tests run the very versions the layer carries.
LOCK := layers/core/requirements.txt

.PHONY: install demo up soak test test-py311 lint format unit integration e2e bench schema lock build clean

# $(1) venv folder, $(2) interpreter, $(3) its version: a venv of another Python is made anew.
define make_venv
	@if [ -x $(1)/bin/python ] && [ "$$($(1)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(3)" ]; then \
		echo "$(1) runs another Python than $(3): making it anew"; rm -rf $(1); fi
	$(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $@
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call make_venv,$(VENV),$(PYTHON),$(PYTHON_VERSION))

install: $(STAMP)

# The quick suites on 3.11: in the main venv when it is 3.11, else in a venv of their own.
ifeq ($(PYTHON_VERSION),3.11)
STAMP311 := $(STAMP)
BIN311 := $(BIN)
else
STAMP311 := .venv-py311/.installed-3.11
BIN311 := .venv-py311/bin
$(STAMP311): pyproject.toml $(LOCK)
	@test -n "$(PYTHON311)" || { echo "no runnable python3.11 found; install it to run the suites on 3.11"; exit 1; }
	$(call make_venv,.venv-py311,$(PYTHON311),3.11)
endif
ALSO_ON_311 := $(if $(and $(PYTHON311),$(filter-out 3.11,$(PYTHON_VERSION))),test-py311)

demo: $(STAMP)  ## drop a one- and a two-speaker job into the embedded local stack and show the result
	$(BIN)/python -m local_stack demo

up: $(STAMP)  ## run the local stack until Ctrl-C
	$(BIN)/python -m local_stack up $(ARGS)

soak: $(STAMP)  ## N jobs (N=1000 unless given) with every fault on at once; prints the invariants, fails if one breaks
	$(BIN)/python -m local_stack soak --jobs $(or $(N),1000) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/core tools tests benchmarks
	for fn in functions/*/app.py; do $(BIN)/mypy "$$fn" || exit 1; done

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/standin tests/cli -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

test: lint  ## ruff, mypy, then every suite; then the quick suites on 3.11 too, if the main venv is not 3.11
	$(BIN)/pytest -q
	$(if $(ALSO_ON_311),$(MAKE) --no-print-directory $(ALSO_ON_311))

test-py311: $(STAMP311)  ## the unit, stand-in and CLI suites on Python 3.11
	$(BIN311)/pytest tests/unit tests/standin tests/cli -q

bench: $(STAMP)  ## every goal against its baseline (webhook, calls, cost per job, cold starts, fetch), then the media paths
	$(BIN)/python benchmarks/bench_goals.py $(ARGS)
	$(BIN)/python benchmarks/bench_media_paths.py

schema: $(STAMP)  ## regenerate the committed job-event and budget-alert JSON Schemas
	$(BIN)/python -c "import json; from infinitetalk_core.events import event_schema, SCHEMA_VERSION; \
	open(f'schemas/job-event-{SCHEMA_VERSION}.json', 'w').write(json.dumps(event_schema(), indent=2, sort_keys=True) + '\n')"
	$(BIN)/python -c "import json; from infinitetalk_core.events import budget_alert_schema, BUDGET_ALERT_SCHEMA_VERSION as V; \
	open(f'schemas/budget-alert-{V}.json', 'w').write(json.dumps(budget_alert_schema(), indent=2, sort_keys=True) + '\n')"

lock: $(STAMP)  ## re-lock the layer at the versions installed now (UPGRADE=1: the newest), then reinstall
	$(BIN)/python -m pip list --format=freeze --exclude-editable > $(VENV)/lock-prefer.txt
	$(MAKE) -C layers/core lock PYTHON=$(abspath $(BIN)/python) $(if $(UPGRADE),,PREFER=$(abspath $(VENV)/lock-prefer.txt))
	$(MAKE) --no-print-directory install

# The SAM CLI in a venv of its own, so it cannot change the versions the tests run.
SAM_VERSION := 1.170.0
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_VERSION)

$(SAM_STAMP):
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_VERSION)
	touch $@

build: $(SAM_STAMP)  ## .aws-sam/build, ready for `sam deploy`: needs make, Python 3.11+ and PyPI; no Docker, no Python 3.12
	SAM_CLI_TELEMETRY=0 PYTHON=$(abspath $(SAM_VENV)/bin/python) $(SAM_VENV)/bin/sam build

clean:
	rm -rf $(VENV) .venv-py311 $(SAM_VENV) .aws-sam .local-stack demo-output .pytest_cache .mypy_cache .ruff_cache
