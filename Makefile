# The two commands of the README:
#   make demo   sets everything up and starts the demo on an embedded SQLite store
#   make test   sets everything up and runs the lint and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/cutover: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/cutover

setup: $(BIN)/cutover

demo: setup
	$(BIN)/cutover demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check contracts gateway parity ops

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .tox build *.egg-info
