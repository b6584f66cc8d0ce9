# Two commands for a newcomer: `make demo` (the tour) and `make test` (lint + the whole suite).
# Each target creates .venv on first use and reinstalls when a requirements file changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test lint bench figures clean

demo: $(VENV)/.runtime-installed
	$(BIN)/python tour.py $(ARGS)

test: lint
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

bench: $(VENV)/.dev-installed
	$(BIN)/python tour.py --bench $(ARGS)

# `make figures`: regenerate every image the guides show (seeded, so a re-run changes little).
# One target per concept; each passes explicit paths under Concept/images/ (scripts default to out/).
FIGURE_TARGETS := figures-BlockingQueue figures-Threading figures-WebSockets figures-RealTimeChat \
                  figures-TwoPhaseCommit figures-UniqueIdGeneration figures-SimpleCDN \
                  figures-ConsistentHashing figures-DistributedLocking figures-common
.PHONY: $(FIGURE_TARGETS)
figures: $(FIGURE_TARGETS)

figures-BlockingQueue: $(VENV)/.dev-installed
	$(BIN)/python BlockingQueue.py demo --seed 1 --plot images/blocking_queue_depth.png

figures-Threading: $(VENV)/.dev-installed
	$(BIN)/python -m Threading.compare --plot Threading/images/threads_vs_processes.png

figures-WebSockets: $(VENV)/.dev-installed
	@true

figures-RealTimeChat: $(VENV)/.dev-installed
	@true

figures-TwoPhaseCommit: $(VENV)/.dev-installed
	@true

figures-UniqueIdGeneration: $(VENV)/.dev-installed
	$(BIN)/python -m UniqueIdGeneration.sortable_keys --rows 1000000 --seed 7 \
		--plot UniqueIdGeneration/images/sortable_keys.png

figures-SimpleCDN: $(VENV)/.dev-installed
	@true

figures-ConsistentHashing: $(VENV)/.dev-installed
	@true

figures-DistributedLocking: $(VENV)/.dev-installed
	@true

figures-common: $(VENV)/.dev-installed
	@true

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: make reinstalls only when a requirements file is newer than its stamp.
$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed
