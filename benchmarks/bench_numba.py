"""Numba's first call in a fresh process: compiling into an empty cache, then loading from it.

A regression in caching (a kernel that stops being cached, a signature that recompiles) shows as
the cached time climbing towards the cold one. One number per run and about half a minute each:
informational, only with GEMMLAB_ASV_EXTRA=1."""

import os
import subprocess
import sys
import tempfile

from .common import EXTRA, SMOKE, require

FIRST_CALL = (
    "import time, torch; import gemmlab; a = torch.ones(4, 4); start = time.perf_counter(); "
    "gemmlab.matmul(a, a, backend='numba'); print(time.perf_counter() - start)"
)


def _first_call_seconds(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


class NumbaFirstCall:
    unit = "seconds"
    number = 1
    repeat = 1
    timeout = 600

    def setup(self):
        require("numba")

    def track_compile_cold_cache(self):
        with tempfile.TemporaryDirectory() as cache:
            return _first_call_seconds(cache)

    def track_compile_warm_cache(self):
        with tempfile.TemporaryDirectory() as cache:
            _first_call_seconds(cache)  # fills the cache
            return _first_call_seconds(cache)


if not EXTRA:  # out of the default selection, which `asv continuous` judges (see common.py)
    del NumbaFirstCall
elif SMOKE:  # the warm-cache benchmark starts with the same cold compile: one is enough to show both run (saves CI ~1.3 min)
    del NumbaFirstCall.track_compile_cold_cache
