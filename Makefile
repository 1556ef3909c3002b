# susc: one-command setup, tests and book builds. Needs only python3 (>= 3.11) on the machine.
#
#   make test        unit tests + every chapter executed under SUSC_PROFILE=tiny (nbval)
#   make book        the HTML book under SUSC_PROFILE=small -> _build/html/index.html
#   make book-tiny   the same with the tiny profile (CI); make book-full: GPU box, full profile
#   make browser-check   headless Chromium checks of the built HTML (math, images, console)
#   make bench       benchmarks/run.py
#   make bench-venv  the devinterp venvs for the side-by-side benchmarks (.venv-bench, .venv-bench2)
#
# Each target (re)creates .venv when it is missing or older than pyproject.toml.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.susc-install.stamp
EXTRAS  ?= dev
PYTEST_WORKERS ?= 2

# JAX's persistent compilation cache, shared by pytest, nbval kernels and book kernels.
# MPLBACKEND is deliberately NOT set: it would silently drop every figure from the notebooks.
export JAX_COMPILATION_CACHE_DIR := $(CURDIR)/_build/jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS := 0
export PYTHONDONTWRITEBYTECODE := 1
# Progress bars are for interactive runs; builds and tests stay quiet (susc/progress.py).
export SUSC_PROGRESS := 0

JB_FLAGS := --all -W -n --keep-going
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.DEFAULT_GOAL := help
.PHONY: help install test test-fast book book-tiny book-full browser-check bench bench-venv env clean distclean

help:
	@sed -n '2,11p' Makefile | sed 's/^# \{0,1\}//'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)  ## create or refresh .venv

# Unit tests (slow statistical ones included) and all MyST chapters; --dist loadfile keeps the
# cells of one notebook on one worker (plain -n breaks notebooks).
# pytest exit 5 means nothing was collected: report it as a failure, with the reason.
test: $(STAMP)
	@SUSC_PROFILE=tiny $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(NBVAL_FLAGS) tests book; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5) -- check tests/ and book/"; fi; \
	exit $$rc

test-fast: $(STAMP)  ## unit tests only, no slow ones, no notebooks
	$(BIN)/pytest -q -m "not slow" tests

# Each profile gets its own jupyter-cache (_build/.jupyter_cache_<profile>, see
# book/_ext/profile_cache.py); the HTML is rebuilt from scratch so no stale page survives.
# Chapters are first executed in parallel into the same jupyter-cache (scripts/preexecute_book.py);
# the build then reuses them, and re-executes (and reports) any chapter that failed there.
define build_book
	rm -rf _build/html _build/.doctrees
	SUSC_PROFILE=$(1) $(BIN)/python scripts/preexecute_book.py $(1)
	SUSC_PROFILE=$(1) $(BIN)/jupyter-book build $(JB_FLAGS) .
endef

book: $(STAMP)
	$(call build_book,small)

book-tiny: $(STAMP)
	$(call build_book,tiny)

book-full: $(STAMP)
	$(call build_book,full)

browser-check: $(STAMP)
	@test -f _build/html/index.html || { echo "no built book: run 'make book' first"; exit 1; }
	$(BIN)/python tests/browser/check_book.py _build/html --screenshots _build/screenshots

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# devinterp 1.3.2 (LLC side) and 2.0.1 (BIF side), each with the torch 2.13.0 CPU wheel
# (benchmarks/README.md). A venv that already has torch and that devinterp version is left alone.
BENCH_TORCH ?= torch==2.13.0
bench-venv:
	@.venv-bench/bin/python -c "import torch, importlib.metadata as m; assert m.version('devinterp') == '1.3.2'" 2>/dev/null || { \
	  $(PYTHON) -m venv .venv-bench && .venv-bench/bin/pip install --quiet $(BENCH_TORCH) && \
	  .venv-bench/bin/pip install --quiet $(BENCH_TORCH) devinterp==1.3.2 numpy; }
	@.venv-bench2/bin/python -c "import torch, importlib.metadata as m; assert m.version('devinterp') == '2.0.1'" 2>/dev/null || { \
	  $(PYTHON) -m venv .venv-bench2 && .venv-bench2/bin/pip install --quiet $(BENCH_TORCH) && \
	  .venv-bench2/bin/pip install --quiet $(BENCH_TORCH) devinterp==2.0.1 numpy; }
	@for v in .venv-bench .venv-bench2; do $$v/bin/python -c "import importlib.metadata as m, torch; \
	  print('$$v: devinterp', m.version('devinterp'), 'torch', torch.__version__)"; done

env: $(STAMP)  ## print versions and devices
	$(BIN)/python -m susc.env

clean:  ## build outputs, caches included (keeps .venv)
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
