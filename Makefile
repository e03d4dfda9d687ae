# Memora Player Core. `make run` starts the service on embedded defaults; `make test` runs
# everything CI runs. Both set up what they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export DJANGO_SETTINGS_MODULE := memora_project.settings

.PHONY: run test test-scale lint typecheck pytest system-deps venv clean bench

$(STAMP): requirements.txt requirements-dev.txt
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The API (gunicorn), a Celery worker and beat, on SQLite and an embedded Redis unless DATABASE_URL /
# REDIS_URL say otherwise; migrations and the demo accounts first. Honours PORT (default 8000).
run: $(STAMP)
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

typecheck: $(STAMP)
	DJANGO_DEBUG=1 $(VENV)/bin/mypy

TEST_DATABASE_URL ?= mysql://root@127.0.0.1:3306/memora
# Logical database 1: the tests never scan through what a benchmark or `make run` left in 0.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

TEST_ENV = DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	DJANGO_DEBUG=1 DJANGO_SECURE=0 MEMORA_RECONCILER_ENABLED=0
FUZZ := memora_project/tests/test_fuzz_schemathesis.py

# The schemathesis cases share one test id, which pytest-xdist would run once: they run apart.
pytest: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/pytest -q -n 2 --dist loadfile --ignore=$(FUZZ) $(PYTEST_ARGS)
	$(TEST_ENV) $(VENV)/bin/pytest -q -p no:xdist $(FUZZ)

test: lint typecheck pytest

# Only the tests that start a Sentinel set or a 3-master Redis Cluster of their own (marker `scale`,
# memora_project/tests/test_topologies.py and test_failover.py); `make test` runs them too.
test-scale: $(STAMP)
	$(TEST_ENV) $(VENV)/bin/pytest -q -p no:xdist -m scale $(PYTEST_ARGS)

# The benchmarks of DESIGN.md's numbers on their own database (memora_bench) and Redis key prefix
# (membench); writes docs/BENCHMARKS.md. About 15 minutes; BENCH_BIG=1 adds the 100k growth point,
# BENCH_PARTS picks parts (verification load flush growth report), BENCH_ARGS go to each part.
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get install -y -q wrk >/dev/null || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q wrk >/dev/null; }; }
	DJANGO_SETTINGS_MODULE=bench.settings $(PY) bench/run.py $(BENCH_PARTS) $(if $(BENCH_BIG),--big) $(if $(BENCH_ARGS),-- $(BENCH_ARGS))

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
