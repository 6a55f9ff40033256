# Two entry points for a fresh machine (Python 3.11 + Node 20 + npm):
#   make demo   install the Python venv only, run the embedded demo (no Anvil, no IPFS, no npm)
#   make test   install everything (venv + npm tree), run the whole test suite against real
#               Anvil + IPFS (scripts/run_tests.sh on two pytest-xdist workers, each with its
#               own Anvil + IPFS pair; FEDTRAIL_TEST_WORKERS=1: one process)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv node install demo test lint bench-gas clean
# venv: the Python package; node: Anvil, js-ipfs, solc and Ganache from npm (~290 MB).
venv: $(VENV)/.installed
node: node_modules/.installed
install: venv node

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Headless Chromium renders the audit report in the browser tests (Debian package).
/usr/bin/chromium:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

demo: venv
	$(VENV)/bin/fedtrail demo

# Two pytest-xdist workers unless FEDTRAIL_TEST_WORKERS (environment or make argument) says.
FEDTRAIL_TEST_WORKERS ?= 2
test: install /usr/bin/chromium
	FEDTRAIL_TEST_WORKERS=$(FEDTRAIL_TEST_WORKERS) scripts/run_tests.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict fedtrail
	$(VENV)/bin/lint-imports

bench-gas: install
	$(PY) scripts/bench/gas.py

clean:
	rm -rf $(VENV) node_modules .run
