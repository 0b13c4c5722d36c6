"""scripts/macro_kernel_blocks.py and the hook it times with, gemmlab._cpp._time_macro_kernel."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import import_or_fail

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "macro_kernel_blocks.py"
cpp = import_or_fail("gemmlab._cpp")


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes_timed_against_the_first(dtype):
    run = run_script("--dtype", dtype, "--rounds", "3", "--seconds", "0.001", "16x14x32", "33x29x47")
    assert run.returncode == 0, run.stderr
    header, first, second = run.stdout.splitlines()
    assert f"macro-kernel, {dtype}" in header and "measured peak" in header
    line = r"KC {} MC {} NC {}: (\S+) GFLOP/s \((\d+)% of peak\), x first (\S+) \(quartiles (\S+)-(\S+)\)"
    first, second = re.fullmatch(line.format(16, 14, 32), first), re.fullmatch(line.format(33, 29, 47), second)
    assert first and second, run.stdout
    assert first.group(3, 4, 5) == ("1.000",) * 3  # the first shape over itself, round by round
    assert all(float(x) > 0 for x in first.groups() + second.groups())


def test_a_bad_shape_is_refused():
    run = run_script("768x56")
    assert run.returncode == 2 and "a block shape is KCxMCxNC" in run.stderr


def test_hook_times_each_pass():
    seconds = cpp._time_macro_kernel("float64", 40, 17, 35, repeats=4)
    assert len(seconds) == 4 and all(0 < s < 1 for s in seconds)


@pytest.mark.parametrize("args, message", [
    (("float32", 0, 14, 32, 1), "kc, mc and nc must be 1..65536; got kc 0, mc 14, nc 32"),
    (("float32", 16, 14, 70000, 1), "kc, mc and nc must be 1..65536; got kc 16, mc 14, nc 70000"),
    (("float64", 60000, 60000, 16, 1), "need more than 1 GiB"),
    (("float32", 16, 14, 32, 0), "repeats must be 1..10000; got 0"),
    (("int8", 16, 14, 32, 1), "takes 'float32' or 'float64', got 'int8'"),
])
def test_hook_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cpp._time_macro_kernel(*args)
