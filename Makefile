# Latency Lab: `make lab` opens the course; `make test` runs every test.
# Both create .venv and install what is needed the first time.

# The course needs Python 3.11+: take python3 when it is new enough, else the newest
# python3.13 / 3.12 / 3.11 on the PATH. `make PYTHON=/path/to/python3.12 lab` overrides.
ifndef PYTHON
PYTHON    := $(shell for p in python3 python3.13 python3.12 python3.11; do \
               $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
               && { echo $$p; break; }; done)
endif
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
LAB_ARGS  ?=
ROOT_ARGS := $(shell [ "$$(id -u)" = "0" ] && echo --allow-root)

.PHONY: lab test test-hog check bench site setup broker-up broker-down doctor lint clean

lab: setup
	$(BIN)/python -m labsupport broker up
	-$(BIN)/python -m labsupport cache up
	$(BIN)/jupyter lab --ip 127.0.0.1 $(ROOT_ARGS) notebooks/00_start_here.ipynb $(LAB_ARGS)

test: setup
	@bash tests/run_all.sh

# The same suite with a busy process pinned to one core beside it (budgets grow by half).
test-hog: setup
	@LAB_CPU_HOG=1 bash tests/run_all.sh

# The inner loop while you change labsupport (about a minute): lint, unit tests, doctests and
# the checks that start no services, broker or kernel and ask no package index. `make test`
# runs everything.
check: setup
	$(BIN)/ruff check labsupport tests conftest.py
	$(BIN)/python -m pytest -p no:cacheprovider -q -n 4 -m "not services and not notebooks and not network" \
	  --doctest-modules labsupport tests --ignore=tests/browser --ignore=tests/artifacts

# Measures the harness, the broker, the test suite, every notebook at real time and a cold
# `make lab`; writes BENCHMARKS.md (about 10 minutes). BENCH_ARGS="--skip cold" etc.
bench: setup
	$(BIN)/python -m labsupport bench $(BENCH_ARGS)

# The course as a static website in site/: every lesson run once at real time (several
# minutes), dashboards kept as images. SITE_ARGS="--from tests/artifacts/executed" builds
# from the notebook test's runs instead (seconds). Open site/index.html.
site: setup
	$(BIN)/python -m labsupport site $(SITE_ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "Latency Lab needs Python 3.11 or \
	newer, and none was found (python3 is $$(python3 --version 2>/dev/null || echo missing)). Install one \
	(Ubuntu/Debian: sudo apt install python3.11 python3.11-venv; macOS: brew install \
	python@3.12; or pyenv install 3.12) and run make again."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(VENV) \
	was made with Python $$($(BIN)/python -V 2>&1 | cut -d' ' -f2), older than the 3.11 the \
	course needs: remove it (rm -rf $(VENV)) and run make again."; exit 1; }
	@echo "Installing the course's packages into $(VENV) (first time only)..."
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -m pip install --quiet -r requirements.txt 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -m pip install --quiet --no-deps -e . 2>&1 | grep -v "is ignored" || true
	@$(BIN)/python -c "import labsupport, confluent_kafka, aiohttp, jupyterlab" \
	  || { echo "Installing packages failed: see the messages above."; exit 1; }
	@touch $(STAMP)

broker-up: setup
	$(BIN)/python -m labsupport broker up

broker-down: setup
	$(BIN)/python -m labsupport broker down

doctor: setup
	$(BIN)/python -m labsupport doctor

lint: setup
	$(BIN)/ruff check labsupport tests conftest.py

clean:
	-$(BIN)/python -m labsupport broker down
	-$(BIN)/python -m labsupport cache down
	rm -rf .lab tests/artifacts
