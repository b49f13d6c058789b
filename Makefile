# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CODE := loadgen tests benchmarks examples

.PHONY: venv demo test lint bench bench-all clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,test]'
	touch $(STAMP)

demo: venv
	$(BIN)/python examples/demo.py

test: venv lint
	$(BIN)/python -m pytest -ra

lint: venv
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy loadgen

# loadgen against the real perf_analyzer 2.51 (installed into a cache outside the venv), side by side.
bench: venv
	$(BIN)/python benchmarks/perf_targets.py

bench-all: bench
	$(BIN)/python benchmarks/server_breakdown.py
	$(BIN)/python benchmarks/tune_search.py
	$(BIN)/python benchmarks/merge_scaling.py
	$(BIN)/python benchmarks/grpc_apis.py
	$(BIN)/python benchmarks/http_vs_grpc.py

clean:
	rm -rf $(VENV) build *.egg-info
