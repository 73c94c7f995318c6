# Two commands for a newcomer (see README.md):
#   make serve   - create .venv, install the API (no torch) and serve the shipped default model
#   make test    - create .venv, install everything the tests need, run lint, types and tests
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck pytest deploy-check install-serve install-dev

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install-serve: $(PY)
	$(PY) -m pip install --quiet -e '.[cpu]'

# torch==2.13.0 is the CPU build that lies on this workplace's disk; an unpinned torch pulls CUDA.
install-dev: $(PY)
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PY) -m pip install --quiet -e '.[cpu,train,dev,client]'

serve: install-serve
	$(PY) -m service --host $(HOST) --port $(PORT)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(VENV)/bin/pytest -q

deploy-check:
	bash deploy/validate.sh

test: install-dev lint typecheck deploy-check pytest
