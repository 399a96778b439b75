# Versus developer commands. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; on a GPU host install a CUDA build of torch into the venv first.
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8000

# Services for the test suite: real PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: install setup demo serve worker test test-fast bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

setup: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_catalog
	$(PY) manage.py load_suites
	$(PY) manage.py build_standins

demo: install
	$(PY) manage.py demo --port $(PORT)

serve: setup
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

# One local worker for both queues, with beat embedded for the periodic sweep and webhook retries.
worker: install
	mkdir -p var
	$(VENV)/bin/celery -A backend worker -Q gpu,default --concurrency 1 --loglevel INFO \
		--beat --schedule var/celerybeat-schedule

test: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)} \
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m gpu_workers.bench

clean:
	rm -rf var/broker var/logs
