"""scripts/compare_builds.py: two builds (here the same one twice) timed against each other."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_one_build_against_itself():
    src = str(ROOT / "src")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_builds.py"), src, src, "--backend", "cpp",
                          "--size", "96", "--dtype", "float64", "--threads", "1", "--pairs", "3", "--block-seconds", "0.01"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    line = run.stdout.splitlines()[-1]
    match = re.fullmatch(r"96\^3 float64: B/A (\S+) \(quartiles (\S+)-(\S+)\); x best peer: A (\S+), B (\S+) "
                         r"\(torch @ (\S+), numpy @ (\S+) GFLOP/s\)", line)
    assert match, run.stdout
    assert all(float(x) > 0 for x in match.groups())


def test_a_rectangular_product():
    src = str(ROOT / "src")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_builds.py"), src, src, "--backend", "cpp",
                          "--shape", "40", "70", "9", "--dtype", "float32", "--threads", "1", "--pairs", "2",
                          "--block-seconds", "0.01"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("40x70x9 float32: B/A "), run.stdout
