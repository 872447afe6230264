# izf-book: `make book` (set up and build the book) and `make test` (all tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CHAPTERS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: help setup book test test-fast lint execute results clean

help:
	@echo "make book     set up .venv if missing, build the book (HTML in book/_build/html)"
	@echo "make test     set up .venv if missing, book build -W, unit tests + pytest --nbval (+ rendered pages)"
	@echo "make test-fast  the unit tests without the slow ones (under a minute; no notebooks, no book)"
	@echo "make lint     ruff check (configuration in pyproject.toml)"
	@echo "make execute  re-run every chapter notebook in place with papermill (after izf_lib changes)"
	@echo "make results  rerun the benchmark notebooks per dataset (quick; FULL=1 for the GPU setting) into results/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build book/ -W --keep-going

# The book is built first (from stored outputs), so tests/test_book_render.py can open its pages in
# headless Chromium; pytest reads testpaths (tests/, notebooks/) and the nbval sanitizer from pyproject.toml.
test: $(STAMP)
	$(MAKE) book
	$(BIN)/pytest --nbval

test-fast: $(STAMP)
	$(BIN)/pytest tests -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .

execute: $(STAMP)
	@for nb in $(CHAPTERS); do \
	  echo "papermill $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" --cwd notebooks -k python3 --log-level WARNING || exit 1; \
	done

# Benchmarks: papermill per dataset into runs/, collected into results/ (FULL=1: paper-like, for a GPU).
results: $(STAMP)
	$(BIN)/python scripts/make_results.py $(if $(FULL),--full,)

clean:
	rm -rf book/_build
