# eib: two commands. `make book` sets up and builds the website from the embedded (synthetic) default;
# `make test` sets up and runs every test. Both print how long set-up and their work took.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The venv is reused while it matches the pinned requirement files, and rebuilt when they change;
# the editable install of eib itself is redone when setup.py or settings.ini change.
PINNED := requirements.txt requirements-nodeps.txt
HASH    = $(shell cat $(PINNED) | sha256sum | cut -c1-16)
PKGHASH = $(shell cat setup.py settings.ini | sha256sum | cut -c1-16)
DEB_PACKAGES := chromium espeak-ng

.PHONY: book test setup system venv site export clean-nbs text check-sync lab help slurm slurm-stop

help:
	@echo "make book   - set up, run the embedded default and render the website into _site/"
	@echo "make test   - set up and run every test (nbdev_test, pytest incl. the browser test)"
	@echo "make setup  - only the set-up (Debian packages when root, .venv from the pinned files)"
	@echo "make lab    - start JupyterLab on 127.0.0.1:8888"
	@echo "make slurm  - (root) install and start a one-node SLURM on this machine; make slurm-stop stops it"
	@echo "make text   - rewrite the jupytext twins in nbs/_text/ after editing notebooks"

# The main job: rerun the synthetic sweeps from the committed codecs into a fresh folder, with both encoders (ComParE
# and Whisper base; the Whisper-base store is made from the rendered corpus first) and the fixed probe, at the quick
# targets and no layer sweep by default so that a fresh machine stays within 15 minutes (`make book BOOK_RATES=full` reruns all 44), then
# build the website: the results chapter shows the committed sweeps and checks the fresh runs against them (EIB_BOOK_RESULTS).
BOOK_RESULTS := _cache/book_results
BOOK_RATES ?= quick
book:
	@t0=$$(date +%s); $(MAKE) --no-print-directory setup; t1=$$(date +%s); \
	rm -rf $(BOOK_RESULTS); mkdir -p $(BOOK_RESULTS); \
	for enc in compare whisper_base; do \
	  $(BIN)/papermill -k python3 --cwd nbs nbs/sweep.ipynb $(BOOK_RESULTS)/sweep_synth_$$enc.ipynb -p dataset synth -p encoder $$enc \
	    -p rates $(BOOK_RATES) -p matched False -p layer_sweep False -p out_dir $(CURDIR)/$(BOOK_RESULTS) --log-level WARNING; done; t2=$$(date +%s); \
	EIB_BOOK_RESULTS=$(CURDIR)/$(BOOK_RESULTS) $(BIN)/eib-book --execute --out _site; t3=$$(date +%s); \
	echo "make book: set-up $$((t1-t0)) s, synthetic sweeps $$((t2-t1)) s, book $$((t3-t2)) s, total $$((t3-t0)) s; site in _site/ (open _site/index.html)"

# nbdev_test runs two notebooks at a time on two cores, so each gets one torch/OpenMP thread (two threads each
# oversubscribe the cores: 09_rate alone took 26 s with one thread and 281 s with two while another job ran).
test:
	@t0=$$(date +%s); $(MAKE) --no-print-directory setup; t1=$$(date +%s); \
	$(MAKE) --no-print-directory check-sync; \
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing; t2=$$(date +%s); \
	$(BIN)/python -m pytest -q tests; t3=$$(date +%s); \
	echo "make test: set-up $$((t1-t0)) s, nbdev_test $$((t2-t1)) s, pytest $$((t3-t2)) s, total $$((t3-t0)) s"

setup: system venv

system:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "eib needs the Debian packages:$$missing (chromium for the browser tests, espeak-ng for the synthetic corpus)."; \
	  echo "Not root, so not installing them: run  sudo apt-get install -y$$missing  and try again."; exit 1; \
	fi

venv:
	@if [ -f $(VENV)/.eib-hash ] && [ "$$(cat $(VENV)/.eib-hash)" = "$(HASH)" ] && [ -x $(BIN)/python ]; then \
	  echo "reusing $(VENV) (matches the pinned files)"; \
	else \
	  echo "building $(VENV) from the pinned files"; rm -rf $(VENV); \
	  $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install -q --upgrade pip; \
	  $(BIN)/pip install -q -r requirements.txt; \
	  $(BIN)/pip install -q --no-deps -r requirements-nodeps.txt; \
	  $(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (eib)" >/dev/null; \
	  echo "$(HASH)" > $(VENV)/.eib-hash; \
	fi
	@if [ "$$(cat $(VENV)/.eib-pkghash 2>/dev/null)" != "$(PKGHASH)" ]; then \
	  $(BIN)/pip install -q --no-deps -e . && echo "$(PKGHASH)" > $(VENV)/.eib-pkghash; \
	fi

# The library is generated from the notebooks; notebooks are kept clean; text twins are kept in sync.
export:
	$(BIN)/nbdev_export

clean-nbs:
	$(BIN)/nbdev_clean

text:
	@for nb in nbs/*.ipynb; do $(BIN)/jupytext -q --to py:percent "$$nb" -o "nbs/_text/$$(basename "$${nb%.ipynb}").py"; done

# Fails when eib/ is out of date with the notebooks, a notebook is not clean, or a text twin is stale.
check-sync:
	@$(BIN)/eib-book --check-sync

# A real one-node SLURM (Debian's slurm-wlm and munge, installed on first use) to run `-p executor slurm` against;
# tests/test_slurm.py brings it up itself when run as root.
slurm:
	@.ci/slurm.sh up

slurm-stop:
	@.ci/slurm.sh down

lab:
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) nbs
