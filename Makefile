# Vigil: `make run` starts it on its embedded defaults; `make test` runs every check
# (`make test-fast` all but the slow end-to-end tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed
# pytest's worker processes (pytest-xdist): one per CPU by default; PYTEST_WORKERS=0 runs the
# tests in pytest's own process (for a debugger, or to read the tests' output in file order).
PYTEST_WORKERS ?= auto

.PHONY: run demo test test-fast lint typecheck contracts pytest bench bench-policies bench-pipeline bench-remote-write bench-notify prompb clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/vigil serve

demo: $(RUN_STAMP)
	$(BIN)/vigil demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src tests

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck contracts pytest

# The inner loop: every check but the tests marked slow (long end-to-end runs).
test-fast: lint typecheck contracts
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-policies: $(STAMP)
	$(BIN)/python bench/policies.py

bench-pipeline: $(STAMP)
	$(BIN)/python bench/pipeline.py

bench-notify: $(STAMP)
	$(BIN)/python bench/notify.py

bench-remote-write: $(STAMP)
	$(BIN)/python bench/remote_write.py

# The Prometheus remote-write messages (src/vigil/ingest/prompb/*.proto, from Prometheus's
# prompb) as Python, with grpcio-tools' bundled protoc. The generated code names the protobuf
# version it needs: keep the protobuf lower bound in pyproject.toml at least that.
PROMPB := src/vigil/ingest/prompb
prompb: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src \
		$(PROMPB)/types.proto $(PROMPB)/remote.proto $(PROMPB)/view.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
