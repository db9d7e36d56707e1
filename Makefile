# vmwidgets developer tasks (GNU make).
#
#   make lessons   open the lessons in JupyterLab (PORT=8888, IP=127.0.0.1)
#   make test      install everything needed, then run the whole test suite
#   make venv      create/update the virtual environment in .venv
#   make browser   make sure Chromium is installed (for the browser tests)
#   make bench     run every benchmark script in benchmarks/
#   make clean     remove the virtual environment, caches and test artifacts

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
# Stamp file: exists once `pip install` succeeded; older than pyproject.toml
# means the dependencies changed and must be installed again.
STAMP  := $(VENV)/.installed

# Where `make lessons` listens. Use IP=0.0.0.0 inside a container.
IP   ?= 127.0.0.1
PORT ?= 8888

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k maps -x'`.
PYTEST_ARGS ?=

.PHONY: venv browser test lessons bench clean

## venv: create .venv and install vmwidgets (editable) with its test extras.
venv: $(STAMP)

# Create the virtual environment only if it does not exist yet.
$(VPY):
	$(PYTHON) -m venv $(VENV)

# An editable install made while vmwidgets/__init__.py did not exist yet
# maps vmwidgets as a namespace package, and keeps doing so after the file
# appears. So once it exists, install again (one time only).
HAS_INIT := $(if $(wildcard vmwidgets/__init__.py),$(VENV)/.has-init)
$(VENV)/.has-init: | $(VPY)
	touch $@

# (Re)install only when pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml $(HAS_INIT) | $(VPY)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -e '.[test]'
	touch $@

## browser: install Debian's chromium if it is missing (needs root + apt).
## Never fails: if it cannot install, it says why and the browser tests skip.
browser:
	bash scripts/ensure-chromium.sh

# nbval runs the lessons on this venv's Python (--nbval-current-env) and
# compares their outputs with the ones saved in the notebooks. If outputs
# vary from run to run (addresses, timings), put regex replacements in
# lessons/nbval_sanitize.cfg and they are applied automatically.
NBVAL_OPTS := --nbval --nbval-current-env \
	$(if $(wildcard lessons/nbval_sanitize.cfg),--nbval-sanitize-with lessons/nbval_sanitize.cfg)

## test: tests/ + doctests in vmwidgets/ + the lesson notebooks (nbval).
## Exits non-zero if anything fails.
test: venv browser
	$(VPY) -m pytest tests vmwidgets lessons $(NBVAL_OPTS) $(PYTEST_ARGS)

## lessons: start JupyterLab on lessons/; it prints the URL with its token.
lessons: venv
	@echo "Starting JupyterLab on http://$(IP):$(PORT)/ -- open the URL with '?token=' printed below. Stop with Ctrl+C."
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=lessons \
		--ip=$(IP) --port=$(PORT) --allow-root --no-browser

## bench: run each benchmarks/*.py; they print their own figures.
bench: venv
	@set -e; found=0; \
	for f in benchmarks/*.py; do \
		[ -e "$$f" ] || continue; found=1; \
		echo "== $$f"; $(VPY) "$$f"; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks in benchmarks/ yet"

## clean: remove everything the targets above created.
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
