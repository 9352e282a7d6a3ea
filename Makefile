# Targets mirror CI (.ci/run runs `make lint typecheck test`, then `make regression REGRESSION_ARGS=--fresh`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BAM := $(VENV)/bin/bam
OUT ?= runs/demo
# Extra arguments of scripts/ci_regression.sh (e.g. --fresh, --tolerance-only, --update-baseline).
REGRESSION_ARGS ?=

.PHONY: venv demo test lint typecheck test-all test-wheel bench regression clean help

help:
	@echo "make demo        end-to-end run on the synthetic default (build, train, evaluate, report)"
	@echo "make test        the CI test suite (not slow, not gpu)"
	@echo "make lint        ruff over bam, tests and scripts (CI)"
	@echo "make typecheck   mypy over bam (CI)"
	@echo "make test-all    every test, slow ones included"
	@echo "make test-wheel  build the wheel, install it in a fresh venv, run bam outside the repo (slow)"
	@echo "make bench       attribution throughput benchmark (scripts/bench.py)"
	@echo "make regression  CI regression gate against baselines/ci_results.csv (REGRESSION_ARGS=--fresh ...)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: venv
	$(BAM) run --config synthetic --out $(OUT)

test: venv
	$(PY) -m pytest -m "not slow and not gpu" -q

lint: venv
	$(VENV)/bin/ruff check bam tests scripts

typecheck: venv
	$(VENV)/bin/mypy bam

test-all: venv
	$(PY) -m pytest -q

test-wheel: venv
	$(PY) -m pytest -q -m slow tests/cli/test_bad_inputs.py -k wheel

bench: venv
	$(PY) scripts/bench.py

regression: venv
	bash scripts/ci_regression.sh $(REGRESSION_ARGS)

clean:
	rm -rf runs .pytest_cache
