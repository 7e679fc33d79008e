# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
# The PostgreSQL half of the suite runs against this server; without one it is skipped, saying why.
TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export TEST_POSTGRES_URL

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	PORT=$(PORT) $(BIN)/gunicorn --config python:gpumetrics.gunicorn_conf wsgi:app

# Two pytest workers (pytest-xdist), a test file each at a time: most tests wait on a
# gunicorn, a browser or a database, so two overlap well even on two cores.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Each benchmark prints a Markdown table: its figure, a baseline from the same run, the ratio
# (docs/performance.md). On PostgreSQL: make bench BENCH_ARGS="--database-url $(TEST_POSTGRES_URL)".
BENCH_ARGS ?=
bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/query.py $(BENCH_ARGS)
	$(BIN)/python bench/tail.py $(BENCH_ARGS)
	$(BIN)/python bench/retention.py $(BENCH_ARGS)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)
	$(BIN)/python bench/latest.py $(BENCH_ARGS)
	$(BIN)/python bench/export.py $(BENCH_ARGS)
	$(BIN)/python bench/prometheus.py $(BENCH_ARGS)
	$(BIN)/python bench/dashboard.py $(BENCH_ARGS)
	$(BIN)/python bench/events.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
