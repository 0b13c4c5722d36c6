"""Odd NumPy operands (misaligned data and strides, big-endian, reversed, read-only) on every
backend and dtype: the right answer or a clear TypeError, never a crash.

The cases (numpy_input_cases.py) run in one subprocess, so a segfault fails the cases it reached
rather than the suite; each backend and dtype is reported here as its own test.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CPU_BACKENDS
from fresh_python import run_python
from numpy_input_cases import DTYPES, LAYOUTS, cases, odd_array

from gemmlab.dispatch import _from_numpy


@pytest.fixture(scope="module")
def outcomes():
    """{case name: detail ('' when right)}, and, if the subprocess died, how and in which case."""
    script = str(Path(__file__).with_name("numpy_input_cases.py"))
    result = run_python("-X", "faulthandler", script, *CPU_BACKENDS)
    reported = dict((o["case"], o["detail"]) for o in map(json.loads, result.stdout.splitlines()))
    died = ""
    if result.returncode != 0:
        first = next((name for name, *_ in cases(CPU_BACKENDS) if name not in reported), None)
        died = f"the subprocess died (exit code {result.returncode}) in case {first!r}:\n{result.stderr[-2000:]}"
    return reported, died


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_odd_numpy_operands(outcomes, backend, dtype):
    reported, died = outcomes
    ours = [(name, layout) for name, b, d, layout, _ in cases(CPU_BACKENDS) if (b, d) == (backend, dtype)]
    assert all(name in reported for name, _ in ours), died or "the subprocess skipped cases"
    failures = [f"{name}: {reported[name]}" for name, _ in ours if reported[name]]
    assert not failures, "\n".join(failures)
    assert {layout for _, layout in ours} == set(LAYOUTS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_only_odd_arrays_are_copied(dtype):
    """An array torch can take as it is is viewed, not copied: gemmlab never copies needlessly."""
    values = np.arange(1.0, 13.0).reshape(3, 4)
    for layout in LAYOUTS:
        x = odd_array(values, dtype, layout)
        shares = _from_numpy(x, "a").data_ptr() == x.ctypes.data
        assert shares == (layout == "aligned"), f"{layout}: {'viewed' if shares else 'copied'}"
