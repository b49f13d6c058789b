# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CODE := loadgen tests benchmarks examples
# What each target installs, so that the demo does not pull the test tools (about 1 GB) with it.
DEMO_STAMP := $(VENV)/.demo-installed
TEST_STAMP := $(VENV)/.test-installed
NOTEBOOK_STAMP := $(VENV)/.notebook-installed
# The editable install leaves loadgen's own modules uncompiled: with PYTHONDONTWRITEBYTECODE set, every run would
# compile them again (about 0.15 s of CPU); compiled once here, they load from __pycache__.
COMPILE := $(BIN)/python -m compileall -q loadgen

.PHONY: venv demo test test-unit lint bench bench-all notebook clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing loadgen and the embedded Triton server (tritonserver 2.51, about 300 MB) into $(VENV) ..."
	$(BIN)/python -m pip install --progress-bar on -e '.[server]'
	$(COMPILE)
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing loadgen with everything the tests use into $(VENV) ..."
	$(BIN)/python -m pip install --progress-bar off -e '.[server,test]'
	$(COMPILE)
	touch $(DEMO_STAMP) $@

$(NOTEBOOK_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[server,report,dataframe]' notebook
	$(COMPILE)
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

test: $(TEST_STAMP) lint
	$(BIN)/python -m pytest -ra

# The unit tests alone: no server, in seconds.
test-unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not server"

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy loadgen

# The example notebook in Jupyter (prints the URL to open; on a desktop it opens the browser).
notebook: $(NOTEBOOK_STAMP)
	$(BIN)/jupyter notebook examples/profile_ensemble.ipynb

# loadgen against the real perf_analyzer 2.51 (installed into a cache outside the venv), side by side; bench-all adds
# Model Analyzer 1.58 (in a virtualenv of its own in that cache) searching with each, and token streams beside AIPerf
# (in a virtualenv of its own there too).
bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/perf_targets.py

bench-all: bench
	$(BIN)/python benchmarks/server_breakdown.py
	$(BIN)/python benchmarks/tune_search.py
	$(BIN)/python benchmarks/merge_scaling.py
	$(BIN)/python benchmarks/grpc_apis.py
	$(BIN)/python benchmarks/http_vs_grpc.py
	$(BIN)/python benchmarks/model_analyzer_search.py --model identity_uint8
	$(BIN)/python benchmarks/llm_client_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
