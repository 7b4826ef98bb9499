# Two commands on a fresh clone: `make demo` (the main job) and `make test` (lint, types, the docs
# site and the whole suite).
# Both install what they need first: a virtualenv in .venv, PyTorch's CPU build, then the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo eval test test-fast lint bench docs

$(BIN)/hardprompts: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: a plain `torch` requirement would pull the multi-GB CUDA build
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/hardprompts

demo: install
	$(BIN)/hardprompts demo

eval: install
	$(BIN)/hardprompts eval --config configs/sst2_builtin_eval.yaml --prompt "It was"

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy    # src/ in mypy's default mode, the public API strictly (pyproject.toml)
	$(MAKE) docs
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The documentation site, warnings as errors (a broken link or a stale API name fails), into
# site/ (git-ignored); `$(BIN)/mkdocs serve` to read it while writing.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: install
	$(BIN)/python benchmarks/score_throughput.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/served_throughput.py
	$(BIN)/python benchmarks/style_step.py
	$(BIN)/python benchmarks/query_efficiency.py
	$(BIN)/python benchmarks/prefix_sharing.py
