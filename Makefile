# izf-book: `make book` (set up and build the book) and `make test` (all tests).
PYTHON ?= python3
PYTEST_ARGS ?=  # extra pytest options for make test, e.g. PYTEST_ARGS="--durations=25"
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CHAPTERS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: help setup lock book test test-portable test-fast lint execute results tolerances clean

help:
	@echo "make book     set up .venv if missing, build the book (HTML in book/_build/html)"
	@echo "make test     set up .venv if missing, book build -W, unit tests + pytest --nbval (+ rendered pages)"
	@echo "make test-portable  the notebook tests again with PyTorch, MKL and oneDNN forced to AVX2 code (another CPU's round-off)"
	@echo "make test-fast  the unit tests without the slow ones (under a minute; no notebooks, no book)"
	@echo "make lock     regenerate constraints.txt (every package pinned) from a fresh install of pyproject.toml"
	@echo "make tolerances  re-measure tests/nbval_tolerances.json under several forced CPU kernels (about 30 min)"
	@echo "make lint     ruff check, and the chapters' code formatted to 79 characters (ruff format --check notebooks)"
	@echo "make execute  re-run every chapter notebook in place with papermill (after izf_lib changes)"
	@echo "make results  rerun the benchmark notebooks per dataset (quick; FULL=1 for the GPU setting) into results/"
	@echo "              ENGINE=submitit SUBMITIT=\"--gpus-per-task 1 --partition gpu\": one submitit job per notebook"

# Installs from the lock: every package at the version the tests passed with (`make lock` renews it).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lock:
	$(PYTHON) scripts/lock.py

book: $(STAMP)
	$(BIN)/jupyter-book build book/ -W --keep-going

# The book is built first (from stored outputs), so tests/test_book_render.py can open its pages in
# headless Chromium; pytest reads testpaths (tests/, notebooks/) and the nbval sanitizer from pyproject.toml.
test: $(STAMP)
	$(MAKE) book
	$(BIN)/pytest --nbval $(PYTEST_ARGS)

# Another kind of CPU, from this one: ATen's kernels, MKL and oneDNN held to AVX2 code paths (on an
# AVX2-only CPU this is its own round-off; the tolerances in tests/nbval_tolerances.json must hold).
PORTABLE_ENV := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
test-portable: $(STAMP)
	$(PORTABLE_ENV) $(BIN)/pytest --nbval notebooks

tolerances: $(STAMP)
	$(BIN)/python scripts/measure_tolerances.py

test-fast: $(STAMP)
	$(BIN)/pytest tests -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check notebooks

execute: $(STAMP)
	@for nb in $(CHAPTERS); do \
	  echo "papermill $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" --cwd notebooks -k python3 --log-level WARNING || exit 1; \
	done

# Benchmarks: papermill per dataset into runs/, collected into results/ (FULL=1: paper-like, for a GPU).
results: $(STAMP)
	$(BIN)/python scripts/make_results.py $(if $(FULL),--full,) $(if $(ENGINE),--engine $(ENGINE),) $(SUBMITIT)

clean:
	rm -rf book/_build
