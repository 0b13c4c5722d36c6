"""Run code in a fresh Python interpreter that imports the same gemmlab as the test process.

For what one process cannot show: a crash (a segfault fails the test, not the suite) or what
`import gemmlab` loads on its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import gemmlab

SRC = str(Path(gemmlab.__file__).resolve().parents[1])


def run_python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python *args` (a script path, or "-c", code) with this gemmlab first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def run_train_command(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m gemmlab train *args` (each turned into a string) in a fresh interpreter."""
    return run_python("-m", "gemmlab", "train", *map(str, args), timeout=timeout)
