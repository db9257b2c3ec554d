# Two commands on a fresh machine: `make run` (install, start on :8000) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PORT ?= 8000

.PHONY: install install-dev run run-cluster redis test chromium lint bench smoke clean models footage

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime models
install-dev: $(VENV)/.dev models footage

# The pose models (BlazePose, from PyPI mediapipe 0.10.21 and npm @mediapipe/pose) into models/
# or $MODELS_DIR, each checked by sha256. Idempotent: run again to repair a missing or bad file.
models: $(VENV)/.runtime
	$(PY) -m analysis.models fetch

# Real footage for the tests (PyPI sports2d's demo clip), into tests/footage/, checked by sha256.
footage: $(VENV)/.runtime
	$(PY) -m analysis.models fetch --footage

run: install
	$(PY) -m uvicorn app:app --host 0.0.0.0 --port $(PORT) --timeout-graceful-shutdown 5

# The distributed mode on this machine (README "Scaling out"): redis-server, an S3 server
# (SeaweedFS from requirements-dev.txt), two RQ workers and the API on :$(PORT); Ctrl-C stops all.
run-cluster: install-dev redis
	$(PY) -m local_cluster --port $(PORT)

test: install-dev chromium redis
	$(PY) -m pytest -q -n 2 --dist loadfile

# The distributed tests and `make run-cluster` run Debian's redis-server: install it where we can.
redis:
	@command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null; } \
	  || echo "redis-server is not installed and cannot be here: the distributed tests will fail"

# The browser test drives Debian's chromium: install it where we can (root with apt-get).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "chromium is not installed and cannot be here: the browser tests will fail"

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy

$(VENV)/.bench: $(VENV)/.dev requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

# `make bench BENCH_ARGS=--quick` for a smoke run (under 2 minutes).
bench: $(VENV)/.bench
	$(PY) -m bench $(BENCH_ARGS)

# `make smoke URL=https://your-app.up.railway.app [API_KEY=...]`: the specification's manual flows
# against a running deployment, one line per step; exits non-zero at the first failure. Needs only
# the runtime requirements. API_KEY given here reaches it through the environment, not argv.
smoke: install
	@test -n "$(URL)" || { echo "usage: make smoke URL=https://... [API_KEY=...]" >&2; exit 2; }
	$(PY) -m smoke "$(URL)"

clean:
	rm -rf $(VENV) storage models tests/footage
