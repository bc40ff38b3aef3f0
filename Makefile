# The two commands a newcomer needs:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[server,training,dev]'
	touch $(STAMP)

.PHONY: setup test test-all bench
setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check codec server training bench tests
	$(VENV)/bin/ruff format --check codec server training bench tests
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python -m bench.speed --threads 2 --hour

.PHONY: serve loadtest docker-lint
serve: $(STAMP)
	$(VENV)/bin/uvicorn --factory server.app:create_app --host 0.0.0.0 --port 8000

loadtest: $(STAMP)
	$(VENV)/bin/python -m bench.loadtest

docker-lint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile
