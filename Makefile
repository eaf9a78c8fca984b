# Every target sets up what it needs: a fresh clone only needs `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint compile check bench eval clean

# Spark (the job library) needs a Java 17+ runtime: install Debian's when the machine has none.
JAVA_STAMP := $(VENV)/.java
$(JAVA_STAMP):
	@mkdir -p $(VENV)
	@if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then \
		echo "installing a Java 17 runtime for Spark"; \
		apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; \
	fi
	@touch $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# asl-validator (npm) is an outside check of every generated state machine.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --no-audit --no-fund --silent
	@touch $@

# The whole platform on this machine: compile, then drive a synthetic estate through the generated state
# machines (backfill, baselines, training, live batches with attacks, publication). See docs/quickstart.md.
run: $(STAMP) $(JAVA_STAMP)
	$(VENV)/bin/ndr-compile specs/
	$(VENV)/bin/ndr-compile demo

compile: $(STAMP)
	$(VENV)/bin/ndr-compile specs/

check: $(STAMP)
	$(VENV)/bin/ndr-compile specs/ --check

lint: $(STAMP)
	$(VENV)/bin/ruff check ndr_compiler ndr_jobs ndr_local tests
	$(VENV)/bin/ndr-compile lint specs/

test: $(STAMP) $(NODE_STAMP) $(JAVA_STAMP)
	$(VENV)/bin/ruff check ndr_compiler ndr_jobs ndr_local tests
	$(VENV)/bin/ndr-compile specs/ --check
	$(PY) -m pytest

bench: $(STAMP) $(NODE_STAMP) $(JAVA_STAMP)
	$(PY) -m ndr_jobs.devtools.bench --out docs/benchmarks-data.md
	$(PY) -m ndr_compiler.bench

# Detection quality on labelled synthetic traffic: AUC and recall at fixed FPR per attack class.
eval: $(STAMP) $(JAVA_STAMP)
	$(PY) -m ndr_jobs.devtools.eval --out docs/detection.md

clean:
	rm -rf $(VENV) node_modules
