"""The numba_cuda backend's kernel under Numba's CUDA simulator: no GPU needed.

The simulator must be switched on before numba.cuda is first imported, and this process has
imported numba already, so the cases (numba_cuda_sim_cases.py) run once in a subprocess and each
case is reported here as its own test.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from numba_cuda_sim_cases import CASES

import gemmlab


@pytest.fixture(scope="module")
def simulated():
    if importlib.util.find_spec("numba_cuda") is None:  # pinned in requirements.txt: a missing one is a failure
        pytest.fail("numba-cuda is not installed, although requirements.txt pins it: `pip install -r requirements.txt`",
                    pytrace=False)
    src = str(Path(gemmlab.__file__).resolve().parents[1])  # run the same gemmlab as this process
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    script = Path(__file__).with_name("numba_cuda_sim_cases.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_numba_cuda_kernel_under_simulator(simulated, case):
    outcome = simulated[case]
    assert outcome["ok"], f"{case}: {outcome['detail']}"
