# Two entry points, both safe to run again: `make demo` and `make test`.
# They create a virtualenv in .venv, install the pinned dependencies, build gemmlab's extensions
# (Cython + C++ torch extension, compiled against the pinned torch) and then do their job.
# The build is redone only when a build input changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export MAX_JOBS ?= 2
BUILD_INPUTS := setup.py pyproject.toml requirements.txt $(wildcard csrc/*) $(wildcard src/gemmlab/backends/*.pyx) $(wildcard src/gemmlab/backends/*.pxi)
INSTALLED := $(VENV)/.gemmlab-installed

.PHONY: setup demo test clean

setup: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# No build isolation: the extensions must compile against the torch installed above.
	$(PY) -m pip install --quiet --no-build-isolation --no-deps --editable .
	$(PY) -m gemmlab info
	touch $@

demo: setup
	$(PY) -m gemmlab ladder

test: setup
	$(PY) -m pytest

clean:
	rm -rf build $(VENV) src/gemmlab/*.so src/gemmlab/backends/*.so src/gemmlab/backends/_cython_kernel*.cpp
