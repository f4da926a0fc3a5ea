# The two commands: `make demo` (set up, start the stack, run the example end to end)
# and `make test` (the whole suite, starting the servers it needs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# `make demo-pytorch`: the PyTorch example (framework pytorch 2.13, its environment built by uv).
.PHONY: setup demo demo-s3 demo-pytorch up down status test test-unit lint bench-dispatch bench-faults bench-logs bench-staging bench-stores bench-ratelimit bench-environments bench-experiments bench-runslist bench-packing bench-packing-real bench-checkpoints bench-fleet bench-sandbox clean

setup: $(VENV)/.installed
	@bash deploy/ensure-redis.sh $(VENV)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

up: setup
	$(PY) -m deploy.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack down; fi

status:
	$(PY) -m deploy.stack status

demo: up
	$(PY) -m deploy.demo

demo-s3: up
	$(PY) -m deploy.demo --s3

demo-pytorch: up
	$(PY) -m deploy.demo --example pytorch-mlp

test: setup
	@bash deploy/ensure-apt.sh "$${DLAAS_TEST_CHROMIUM:-/usr/bin/chromium}" chromium "the dashboard's browser tests"
	@bash deploy/ensure-apt.sh /usr/bin/bwrap bubblewrap "the run sandbox's tests"
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest -m 'not integration'

lint: setup
	$(VENV)/bin/ruff check .

bench-dispatch: setup
	$(PY) -m benchmarks.dispatch

bench-logs: setup
	$(PY) -m benchmarks.logs

bench-staging: setup
	$(PY) -m benchmarks.staging

bench-stores: setup
	$(PY) -m benchmarks.stores

bench-faults: setup
	$(PY) -m benchmarks.faults

bench-ratelimit: setup
	$(PY) -m benchmarks.ratelimit

bench-environments: setup
	$(PY) -m benchmarks.environments

bench-experiments: setup
	$(PY) -m benchmarks.experiments

bench-runslist: setup
	$(PY) -m benchmarks.runslist

bench-packing: setup
	$(PY) -m benchmarks.packing

bench-packing-real: setup
	$(PY) -m benchmarks.packing_real

bench-checkpoints: setup
	$(PY) -m benchmarks.checkpoints

bench-fleet: setup
	$(PY) -m benchmarks.fleet

bench-sandbox: setup
	$(PY) -m benchmarks.sandbox

clean: down
	rm -rf .dlaas
