# The two commands: `make demo` (set up, start the stack, run the example end to end)
# and `make test` (the whole suite, starting the servers it needs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup demo demo-s3 up down status test test-unit lint bench-dispatch bench-faults bench-logs bench-staging bench-stores bench-ratelimit clean

setup: $(VENV)/.installed
	@bash deploy/ensure-redis.sh $(VENV)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

up: setup
	$(PY) deploy/stack.py up

down:
	@if [ -x $(PY) ]; then $(PY) deploy/stack.py down; fi

status:
	$(PY) deploy/stack.py status

demo: up
	$(PY) deploy/demo.py

demo-s3: up
	$(PY) deploy/demo.py --s3

test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest -m 'not integration'

lint: setup
	$(VENV)/bin/ruff check .

bench-dispatch: setup
	$(PY) benchmarks/dispatch.py

bench-logs: setup
	$(PY) benchmarks/logs.py

bench-staging: setup
	$(PY) benchmarks/staging.py

bench-stores: setup
	$(PY) benchmarks/stores.py

bench-faults: setup
	$(PY) benchmarks/faults.py

bench-ratelimit: setup
	$(PY) benchmarks/ratelimit.py

clean: down
	rm -rf .dlaas
