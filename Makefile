# Every target sets up what it needs: a fresh clone only needs `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_STAMP := node_modules/.installed

# Installs come from the lock files (exact versions with hashes, resolved for Python 3.11 on linux x86_64), then the
# project itself without dependencies. requirements/lint.txt is the core (what `ndr-compile lint` imports) and ruff;
# requirements/dev.txt is every extra (jobs, local, deploy) and the test tools. `make lock` regenerates both, and the
# images' locks (requirements/spark-image.txt, python-image.txt: docs/runtime.md).
LINT_STAMP := $(VENV)/.installed-lint
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.10
UV_COMPILE := $(VENV)/lock-tools/bin/uv pip compile pyproject.toml --generate-hashes \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' --quiet
LOCK := $(UV_COMPILE) --python-version 3.11
# The images' Pythons (docs/runtime.md): SageMaker's Spark 3.5 Processing image runs 3.12 (its py312 variant); the
# plain Python image is built on 3.11, CI's Python. Their locks hold the job library's dependencies at dev.txt's
# versions, without pyspark and py4j (the Spark image's own Spark provides them).
SPARK_IMAGE_PYTHON := 3.12
PYTHON_IMAGE_PYTHON := 3.11
IMAGE_LOCK := --extra jobs -c requirements/dev.txt --no-emit-package pyspark --no-emit-package py4j

.PHONY: run test test-fast lint lock compile check bench eval images clean

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)

$(LINT_STAMP): requirements/lint.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r requirements/lint.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# dev.txt pins every package of lint.txt at the same version (lint.txt is resolved under it): both stamps hold
$(STAMP): requirements/dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@ $(LINT_STAMP)

# Resolve again after a change to the dependencies in pyproject.toml (keeps the other pins; to move every pin to
# the newest release: `make lock LOCK_ARGS=--upgrade`). Needs PyPI.
lock:
	@test -x $(VENV)/lock-tools/bin/uv || $(PYTHON) -m venv $(VENV)/lock-tools
	$(VENV)/lock-tools/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK) $(LOCK_ARGS) --extra dev -o requirements/dev.txt
	$(LOCK) $(LOCK_ARGS) --extra lint -c requirements/dev.txt -o requirements/lint.txt
	$(UV_COMPILE) --python-version $(SPARK_IMAGE_PYTHON) $(IMAGE_LOCK) -o requirements/spark-image.txt
	$(UV_COMPILE) --python-version $(PYTHON_IMAGE_PYTHON) $(IMAGE_LOCK) -o requirements/python-image.txt

# Spark (the job library) needs a Java 17+ runtime: install Debian's when the machine has none.
JAVA_STAMP := $(VENV)/.java
$(JAVA_STAMP):
	@mkdir -p $(VENV)
	@if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then \
		echo "installing a Java 17 runtime for Spark"; \
		apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; \
	fi
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

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check ndr_compiler ndr_jobs ndr_local tests
	$(VENV)/bin/ndr-compile lint specs/

test: $(STAMP) $(NODE_STAMP) $(JAVA_STAMP)
	$(VENV)/bin/ruff check ndr_compiler ndr_jobs ndr_local tests
	$(VENV)/bin/ndr-compile specs/ --check
	$(PY) -m pytest

# The compiler, lint and golden-file tests (the `compiler` layer, see tests/conftest.py): about half a minute.
test-fast: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m compiler

bench: $(STAMP) $(NODE_STAMP) $(JAVA_STAMP)
	$(PY) -m ndr_jobs.devtools.bench --out docs/benchmarks-data.md --runtimes ndr_compiler/cadence_runtimes.json
	$(PY) -m ndr_compiler.bench

# Detection quality on labelled synthetic traffic: AUC and recall at fixed FPR per attack class.
eval: $(STAMP) $(JAVA_STAMP)
	$(PY) -m ndr_jobs.devtools.eval --out docs/detection.md

# The pipelines' container images (docker/), tagged ctx-<hash of their context>; where Docker exists. To ECR:
# `.venv/bin/ndr-compile images push --env dev` (docs/deploy.md, Images).
images: $(STAMP)
	@command -v docker >/dev/null || { echo "make images needs Docker (docker is not on PATH)"; exit 2; }
	$(VENV)/bin/ndr-compile images build --env dev

clean:
	rm -rf $(VENV) node_modules
