# The commands a newcomer needs. Everything runs from a virtualenv in .venv built from the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements-dev.lock
STAMP  := $(VENV)/.installed-$(shell sha1sum $(LOCK) | cut -c1-12)

.PHONY: install serve test test-fast check lint format migrate seed export lock clean bench fuzz

install: $(STAMP)

$(STAMP): $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	rm -f $(VENV)/.installed-* && touch $@

serve: install ## migrate, seed an empty database, serve on HOST:PORT (DATABASE_URL)
	$(BIN)/python -m app serve

test-fast: install ## the SQLite suite without end-to-end and browser tests (the everyday loop)
	env -u TEST_POSTGRES_URL $(BIN)/python -m pytest -q -m "not e2e and not browser" $(PYTEST_ARGS)

test: check ## lint, types, then the whole suite on SQLite and on PostgreSQL (.ci/suites)
	bash .ci/suites $(PYTEST_ARGS)

fuzz: install ## contract fuzzing: schemathesis against a live server on throwaway databases (.ci/fuzz)
	bash .ci/fuzz

check: install ## lint, format and type checks
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy app bench

format: install
	$(BIN)/ruff format app tests migrations bench
	$(BIN)/ruff check --fix app tests migrations bench

migrate: install
	$(BIN)/python -m app migrate

seed: install
	$(BIN)/python -m app seed

export: install ## all observations as CSV on stdout
	$(BIN)/python -m app export

# The issue's goals against references measured in the same run (docs/performance.md), on
# SQLite; BENCH_BACKENDS=sqlite,postgresql adds PostgreSQL. Datasette, the reference, gets a
# virtualenv of its own. Results: bench/results/<UTC timestamp>.json.
BENCH_REF := bench/.venv-ref
BENCH_REFS := datasette==0.65.5 uvloop==0.23.0 httptools==0.9.0
bench: install ## benchmark against Datasette, Starlette and sqlite3 (docs/performance.md; BENCH_SIZES, BENCH_SECONDS)
	@for tool in wrk curl sqlite3; do command -v $$tool >/dev/null || { \
		apt-get update -qq && apt-get install -y -qq wrk curl sqlite3 >/dev/null; break; }; done
	@test -f $(BENCH_REF)/.installed-1 || { rm -rf $(BENCH_REF) && $(PYTHON) -m venv $(BENCH_REF) \
		&& $(BENCH_REF)/bin/python -m pip install --quiet --disable-pip-version-check $(BENCH_REFS) \
		&& touch $(BENCH_REF)/.installed-1; }
	BENCH_REF_VENV=$(BENCH_REF) $(BIN)/python bench/run.py

# 64 clients for 60 s, 90% reads and 10% curator writes; fails on any error, timeout or lost write.
# PostgreSQL: TEST_POSTGRES_URL's server, or a throwaway one from .ci/postgres (skipped, loudly, if none).
.PHONY: load
LOAD_SECONDS ?= 60
LOAD_CONNECTIONS ?= 64
load: install ## load test on SQLite then PostgreSQL (docs/performance.md; LOAD_SECONDS, LOAD_CONNECTIONS)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	LOAD_SECONDS=$(LOAD_SECONDS) LOAD_CONNECTIONS=$(LOAD_CONNECTIONS) $(BIN)/python bench/load.py

PIN := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links

lock: ## re-pin requirements.lock (runtime) and requirements-dev.lock (runtime + tests) from pyproject.toml
	$(BIN)/python -m pip install --quiet pip-tools
	$(PIN) --output-file requirements.lock pyproject.toml
	$(PIN) --extra dev --output-file requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage
