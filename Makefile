# `make demo` and `make test` are all a fresh clone needs: both create the
# virtual environment on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := .demo

.PHONY: demo test docs install clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits_demo.py --workdir $(DEMO)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The documentation site (docs/, mkdocs.yml), rebuilt as you edit, at http://127.0.0.1:8000.
docs: $(STAMP)
	$(BIN)/python -m mkdocs serve

# The browser test drives Debian's Chromium; install it when missing and we may
# (root), otherwise that test skips and says why (and fails under CI=true).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(DEMO) runs .pytest_cache
