# Two entry points for a fresh machine (Python 3.11 + Node 20 + npm):
#   make demo   install everything, run the embedded demo
#   make test   install everything, run the whole test suite against real Anvil + IPFS
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install demo test lint bench-gas clean
install: $(VENV)/.installed node_modules/.installed

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

demo: install
	$(VENV)/bin/fedtrail demo

test: install /usr/bin/chromium
	scripts/run_tests.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict fedtrail
	$(VENV)/bin/lint-imports

bench-gas: install
	$(PY) scripts/bench/gas.py

clean:
	rm -rf $(VENV) node_modules .run
