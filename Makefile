# The two commands of the README:
#   make demo   sets everything up and starts the demo on an embedded SQLite store
#   make test   sets everything up and runs the lint and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

NODE_CLIENTS = tests/e2e/node
BROWSER_TESTS = tests/browser

.PHONY: setup demo test lint bench clean node-clients system-packages browser

$(BIN)/cutover: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/cutover

setup: $(BIN)/cutover

# make demo PORT=8090 (HOST=0.0.0.0 to reach it from another machine)
demo: setup
	$(BIN)/cutover demo --bind $(HOST):$(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check contracts gateway parity ops
	$(BIN)/mypy contracts gateway parity

# Node clients the end-to-end tests drive (the `ws` package), installed once.
$(NODE_CLIENTS)/node_modules/.package-lock.json: $(NODE_CLIENTS)/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund --loglevel=error

node-clients: $(NODE_CLIENTS)/node_modules/.package-lock.json

# Debian packages the tests drive: nginx in front of a cluster (the chaos
# tests). Installed once, without starting the service.
/usr/sbin/nginx:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq nginx

system-packages: /usr/sbin/nginx

# The browser tests: Debian's chromium driven by playwright-core (never a
# downloaded browser), both installed once.
/usr/bin/chromium:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(BROWSER_TESTS)/node_modules/.package-lock.json: $(BROWSER_TESTS)/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix $(BROWSER_TESTS) --no-audit --no-fund --loglevel=error

browser: /usr/bin/chromium $(BROWSER_TESTS)/node_modules/.package-lock.json

test: lint node-clients system-packages browser
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .tox build *.egg-info
