.PHONY: check lint imports type test demo bench

VENV ?= .venv
PY := $(VENV)/bin/python

check: lint imports type test

lint:
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

imports:
	$(VENV)/bin/lint-imports

type:
	$(PY) -m mypy

test:
	./scripts/test.sh

demo:
	$(VENV)/bin/headwater demo

bench:
	$(PY) benchmarks/ingest.py
