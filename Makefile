.PHONY: check lint type test demo bench

VENV ?= .venv
PY := $(VENV)/bin/python

check: lint type test

lint:
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

type:
	$(PY) -m mypy

test:
	./scripts/test.sh

demo:
	$(VENV)/bin/headwater demo

bench:
	$(PY) benchmarks/ingest.py
