# Two commands for a newcomer: `make demo` (the tour) and `make test` (lint + the whole suite).
# Each target creates .venv on first use and reinstalls when a requirements file changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test lint bench figures clean

demo: python-check $(VENV)/.runtime-installed
	$(BIN)/python tour.py $(ARGS)

test: lint
	$(BIN)/python -m pytest $(ARGS)

lint: python-check $(VENV)/.dev-installed
	$(BIN)/ruff check .

bench: python-check $(VENV)/.dev-installed
	$(BIN)/python tour.py --bench $(ARGS)
	$(BIN)/python -m common.faultproxy_bench

# `make figures`: regenerate every image the guides show (seeded, so a re-run changes little).
# One target per concept; each passes explicit paths under Concept/images/ (scripts default to out/).
FIGURE_TARGETS := figures-BlockingQueue figures-Threading figures-WebSockets figures-RealTimeChat \
                  figures-TwoPhaseCommit figures-UniqueIdGeneration figures-SimpleCDN \
                  figures-ConsistentHashing figures-DistributedLocking figures-common
.PHONY: $(FIGURE_TARGETS)
figures: python-check $(FIGURE_TARGETS)

figures-BlockingQueue: $(VENV)/.dev-installed
	$(BIN)/python BlockingQueue.py demo --seed 1 --plot images/blocking_queue_depth.png

figures-Threading: $(VENV)/.dev-installed
	$(BIN)/python -m Threading.compare --plot Threading/images/threads_vs_processes.png

figures-WebSockets: $(VENV)/.dev-installed
	@true

figures-RealTimeChat: $(VENV)/.dev-installed
	$(VENV)/bin/python -m RealTimeChat.screenshot --out RealTimeChat/images/chat.png

figures-TwoPhaseCommit: $(VENV)/.dev-installed
	$(BIN)/python -m TwoPhaseCommit.diagrams --out-dir TwoPhaseCommit/images

figures-UniqueIdGeneration: $(VENV)/.dev-installed
	$(BIN)/python -m UniqueIdGeneration.sortable_keys --rows 1000000 --seed 7 \
		--plot UniqueIdGeneration/images/sortable_keys.png

figures-SimpleCDN: $(VENV)/.dev-installed
	@true

figures-ConsistentHashing: $(VENV)/.dev-installed
	$(BIN)/python -m ConsistentHashing.simulate --out ConsistentHashing/images
	$(BIN)/python -m ConsistentHashing.compare --out ConsistentHashing/images
	$(BIN)/python -m ConsistentHashing.redis_cluster --out ConsistentHashing/images

figures-DistributedLocking: $(VENV)/.dev-installed
	$(BIN)/python -m DistributedLocking.partition --diagram DistributedLocking/images/partition.png

figures-common: $(VENV)/.dev-installed
	$(BIN)/python -m common.faultproxy_demo --out common/images/faultproxy_demo.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Checked before anything is installed: an old Python would fail deep inside pip and leave a
# broken .venv behind; a .venv made by another interpreter is rebuilt rather than reused.
PY_VERSION = $(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
.PHONY: python-check
python-check:
	@found=$$($(PY_VERSION) 2>/dev/null) || found="none ($(PYTHON) did not run)"; \
	case "$$found" in 3.1[1-9].*|3.[2-9][0-9].*) ;; \
	  *) echo "error: needs Python >= 3.11, found $$found; set PYTHON=python3.11 (e.g. make PYTHON=python3.11 test)" >&2; exit 1;; \
	esac; \
	if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version)' 2>/dev/null)" != \
	     "$$($(PYTHON) -c 'import sys; print(sys.version)')" ]; then \
	  echo "make: $(VENV) was made by another Python than $(PYTHON) ($$found): rebuilding it"; \
	  rm -rf $(VENV); \
	fi

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: make reinstalls only when a requirements file is newer than its stamp.
$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed
