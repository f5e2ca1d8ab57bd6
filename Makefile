# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo up test lint format unit integration e2e bench schema build clean

$(STAMP): pyproject.toml layers/core/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## drop a one- and a two-speaker job into the embedded local stack and show the result
	$(BIN)/python -m local_stack demo

up: $(STAMP)  ## run the local stack until Ctrl-C
	$(BIN)/python -m local_stack up $(ARGS)

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

test: lint  ## ruff, mypy, then unit, integration and end-to-end tests
	$(BIN)/pytest -q

bench: $(STAMP)  ## side-by-side figures: streamed vs whole-file delivery, ranged vs whole audio probing
	$(BIN)/python benchmarks/bench_media_paths.py

schema: $(STAMP)  ## regenerate the committed job-event JSON Schema
	$(BIN)/python -c "import json; from infinitetalk_core.events import event_schema, SCHEMA_VERSION; \
	open(f'schemas/job-event-{SCHEMA_VERSION}.json', 'w').write(json.dumps(event_schema(), indent=2, sort_keys=True) + '\n')"

build:  ## needs the AWS SAM CLI: pip install aws-sam-cli
	sam build

clean:
	rm -rf $(VENV) .aws-sam .local-stack demo-output .pytest_cache .mypy_cache .ruff_cache
