# The commands a newcomer needs. Everything runs from a virtualenv in .venv built from the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements-dev.lock
STAMP  := $(VENV)/.installed-$(shell sha1sum $(LOCK) | cut -c1-12)

.PHONY: install serve test check lint format migrate seed export lock clean bench fuzz

install: $(STAMP)

$(STAMP): $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	rm -f $(VENV)/.installed-* && touch $@

serve: install ## migrate, seed an empty database, serve on HOST:PORT (DATABASE_URL)
	@$(BIN)/python -m compileall -q app  # the bytecode, once: start never compiles app/
	$(BIN)/python -m app serve

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

# PostgreSQL: bench/run.py starts a throwaway server with .ci/postgres (pg_start, pg_stop at the
# end) unless BENCH_POSTGRES_URL names one; pg_start installs PostgreSQL if it is missing.
# The benchmark runs on BENCH_PYTHON ($(PYTHON) unless told) in two virtualenvs of its own: the
# app's, from the runtime lock as the image installs it, and the references' (Datasette). Both
# are named after the interpreter, so that a run on another build of Python never reuses them.
BENCH_PYTHON ?= $(PYTHON)
BENCH_REFS := datasette==0.65.5 uvloop==0.23.0 httptools==0.9.0
bench: ## benchmark on SQLite then PostgreSQL (docs/performance.md; BENCH_PYTHON, BENCH_BACKENDS, BENCH_SIZES, BENCH_SECONDS)
	@for tool in wrk curl sqlite3; do command -v $$tool >/dev/null || { \
		apt-get update -qq && apt-get install -y -qq wrk curl sqlite3 >/dev/null; break; }; done
	@tag=$$($(BENCH_PYTHON) -c 'import hashlib, sys; print(hashlib.sha1((sys.executable + sys.version).encode()).hexdigest()[:8])') \
	&& app=bench/.venv-app-$$tag ref=bench/.venv-ref-$$tag lock=$$(sha1sum requirements.lock | cut -c1-12) \
	&& { test -f $$app/.installed-$$lock || { rm -rf $$app && $(BENCH_PYTHON) -m venv $$app \
		&& $$app/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock \
		&& touch $$app/.installed-$$lock; }; } \
	&& { test -f $$ref/.ref-1 || { rm -rf $$ref && $(BENCH_PYTHON) -m venv $$ref \
		&& $$ref/bin/python -m pip install --quiet --disable-pip-version-check $(BENCH_REFS) \
		&& touch $$ref/.ref-1; }; } \
	&& BENCH_REF_VENV=$$ref $$app/bin/python bench/run.py

# Instructions per request under valgrind: costs that do not move with the machine's load.
.PHONY: bench-instructions
bench-instructions: install ## instructions per request: hello-world, page, cached page, floor (docs/performance.md)
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python bench/instructions.py

# The SQLite settings issue 4 names (page cache, mmap, read-only reads, WAL, synchronous),
# each measured through the app's engine, statements and import on the benchmark's files.
.PHONY: bench-sqlite
bench-sqlite: install ## SQLite settings: page statement, commits, reads beside a writer (docs/performance.md)
	$(BIN)/python bench/sqlite_settings.py

# 64 clients for 60 s, 90% reads and 10% curator writes; fails on any error, timeout or lost write.
# PostgreSQL: TEST_POSTGRES_URL's server, or a throwaway one from .ci/postgres (skipped, loudly, if none).
.PHONY: load
LOAD_SECONDS ?= 60
LOAD_CONNECTIONS ?= 64
load: install ## load test on SQLite then PostgreSQL (docs/load.md; LOAD_SECONDS, LOAD_CONNECTIONS)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	LOAD_SECONDS=$(LOAD_SECONDS) LOAD_CONNECTIONS=$(LOAD_CONNECTIONS) $(BIN)/python bench/load.py

PIN := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links

lock: ## re-pin requirements.lock (runtime) and requirements-dev.lock (runtime + tests) from pyproject.toml
	$(BIN)/python -m pip install --quiet pip-tools
	$(PIN) --output-file requirements.lock pyproject.toml
	$(PIN) --extra dev --output-file requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage
