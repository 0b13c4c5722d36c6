# Two entry points, both safe to run again: `make demo` and `make test`.
# They create a virtualenv in .venv, install the pinned dependencies, build gemmlab's extensions
# (Cython + C++ torch extension, compiled against the pinned torch) and then do their job.
# The build is redone only when a build input changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export MAX_JOBS ?= 2
BUILD_INPUTS := setup.py cuda_build.py pyproject.toml requirements.txt $(wildcard csrc/* csrc/gemm/* csrc/cuda/*) $(wildcard src/gemmlab/backends/*.pyx src/gemmlab/backends/*.pxi)
INSTALLED := $(VENV)/.gemmlab-installed

BUILD_INPUTS += $(wildcard csrc/cuda/*)

.PHONY: setup demo test asv-smoke clean

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

# The asv smoke run goes first so that pytest's summary is the last thing printed. Two pytest
# workers (pytest-xdist) on the 2-core CI machines: much of the suite waits on subprocesses or runs on
# one core, and the suite took 335-378 s against ~450 s with one worker (2-core Xeon, 2026-12-02).
test: setup asv-smoke cuda-check
	$(PY) -m pytest -n 2 --dist worksteal --durations=15

# The asv suite must keep working: check it imports, then run every benchmark once on small data
# in this environment (results are not saved). asv exits non-zero if a benchmark fails.
asv-smoke: setup
	$(VENV)/bin/asv machine --yes > /dev/null
	$(VENV)/bin/asv check --python=same
	GEMMLAB_ASV_SMOKE=1 $(VENV)/bin/asv run --python=same --quick --dry-run --show-stderr --durations 5

# The CUDA kernels compiled with plain nvcc (no torch needed) and, on a machine with a GPU, checked;
# skipped with a message where there is no nvcc.
.PHONY: cuda-check
cuda-check:
	scripts/cuda_check.sh

clean:
	rm -rf build .asv $(VENV) src/gemmlab/*.so src/gemmlab/backends/*.so src/gemmlab/backends/_cython_kernel*.cpp
