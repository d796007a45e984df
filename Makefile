# Two commands on a fresh machine with Python 3.11 and make:
#   make run   - create .venv, install, run the embedded default pipeline end to end (dvc repro)
#   make test  - create .venv if missing, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: venv run test flow bench clean-data lavis-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	test -d .git || (git init -q && git add -A && git -c user.name=genvpt -c user.email=genvpt@localhost commit -qm "initial")
	$(BIN)/dvc repro
	@echo
	@echo "Results:"
	@echo "  prepared shards + manifests : data/prepared/{source,target}/"
	@for d in data/tokenizers data/tokens data/generators data/clip data/captions data/prompts data/samples scores; do \
	  test -e $$d && echo "  $$d/"; done; true
	@test -e report/index.html && echo "  report                      : report/index.html (also report/report.md)" || true
	@echo "  metrics: $(BIN)/dvc metrics show    plots: $(BIN)/dvc plots show"

flow: $(STAMP)
	$(BIN)/python -m flows.pipeline

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean-data:
	rm -rf data report

# BLIP-2 through LAVIS lives in its own environment (its pins break the main one); the caption stage's `lavis`
# backend runs genvpt/captions/lavis_worker.py inside it as a subprocess.
lavis-env:
	test -x .venv-lavis/bin/python || $(PYTHON) -m venv .venv-lavis
	.venv-lavis/bin/python -m pip install --quiet --upgrade pip
	.venv-lavis/bin/python -m pip install -r genvpt/captions/lavis_requirements.txt -c genvpt/captions/lavis_constraints.txt
	.venv-lavis/bin/python -c "import lavis; print('lavis', lavis.__version__ if hasattr(lavis, '__version__') else 'imported')"
