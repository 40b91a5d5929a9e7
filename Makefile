# Two commands on a fresh machine: `make run` (the main job) and `make test` (lint, types, tests).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: venv run test lint format typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Keep a torch the environment already has; otherwise take the CPU build (2.13.0).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/rankguide demo

lint: venv
	$(VENV)/bin/ruff check rankguide_graph tests benchmarks examples
	$(VENV)/bin/ruff format --check rankguide_graph tests benchmarks examples

format: venv
	$(VENV)/bin/ruff format rankguide_graph tests benchmarks examples
	$(VENV)/bin/ruff check --fix rankguide_graph tests benchmarks examples

typecheck: venv
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest -q

bench: venv
	$(PY) benchmarks/bench_signals.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_graph.py
	$(PY) benchmarks/bench_chat.py
	$(PY) benchmarks/bench_server.py
	$(PY) benchmarks/bench_remote_lrm.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_batch.py
	$(PY) benchmarks/bench_r2r_label.py
	$(PY) benchmarks/bench_threads.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
