# The two commands of README.md: `make run` and `make test`. Each creates the
# virtual environment when it is missing and installs the project into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch: the test environment needs no GPU stack.
TORCH  ?= torch==2.13.0

.PHONY: run test lint bench install browser clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e '.[local,test]'
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/oscar-sd serve

# Debian's Chromium for the browser tests (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(BIN)/.installed
	$(BIN)/ruff check oscar_sd tests bench

# Two workers, each taking the next test when free: most tests wait (sockets, the
# browser, subprocesses), so two share the 2 cores well.
test: $(BIN)/.installed browser lint
	$(BIN)/python -m pytest -n 2 --dist worksteal

# Each prints a table with its baseline or target; none is asserted in tests.
bench: $(BIN)/.installed
	$(BIN)/python bench/notify_latency.py
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/service.py
	$(BIN)/python bench/ui.py
	$(BIN)/python bench/history.py
	$(BIN)/python bench/restarts.py
	$(BIN)/python bench/listen_refused.py
	$(BIN)/python bench/capacity.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
