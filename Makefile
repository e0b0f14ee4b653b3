# The README's two commands: `make demo` and `make test`. Both create the virtualenv at .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-tools crash-test lint schemas clean

# torch==2.13.0 goes in first so pip takes the local CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,quality]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/pip install --quiet -e '.[train,quality,dev]'
	touch $@

demo: $(VENV)/.installed-run
	$(BIN)/gristmill up --demo

# Tools the tests drive: Debian's docker-compose (validates compose files, no engine needed), Chromium, and
# PostgreSQL's server binaries (the tests start their own server in a temporary directory).
test-tools:
	@command -v docker-compose >/dev/null && command -v chromium >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose chromium postgresql)

test: $(VENV)/.installed-test test-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The SIGKILL recovery trials at the README's size (`make test` runs one trial of 1,000 events).
crash-test: $(VENV)/.installed-test
	GRISTMILL_CRASH_DOCS=$${GRISTMILL_CRASH_DOCS:-5000} GRISTMILL_CRASH_TRIALS=$${GRISTMILL_CRASH_TRIALS:-5} \
	  $(BIN)/python -m pytest -m crash

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

schemas: $(VENV)/.installed-run
	$(BIN)/python -m schemas.export

clean:
	rm -rf $(VENV) .gristmill .pytest_cache
