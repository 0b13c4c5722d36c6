"""Cases for the numba_cuda kernel under Numba's CUDA simulator (run by test_numba_cuda_sim.py).

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, and other test modules import
numba, so the cases run in a subprocess: `NUMBA_ENABLE_CUDASIM=1 python numba_cuda_sim_cases.py`
prints one JSON object, {case name: {"ok": bool, "detail": str}}. Importing this module (to read
CASES) does not import numba.

Operands are NumPy arrays wrapped as simulated device arrays, views included, so the kernel reads
transposed, sliced and broadcast (stride-0) operands through their strides, as it reads torch
tensors through __cuda_array_interface__ on a GPU. Outputs start as NaN, and output views sit in
a NaN buffer that must be left untouched outside them. The entry points' argument checks run here
too (REJECTIONS): without a GPU this is the only place they can.
"""

from __future__ import annotations

import json
import os
import sys

# Odd sizes, none a multiple of the 16x16 tile except one; k = 0; one row; one column.
SHAPES = [(1, 1, 1), (5, 7, 3), (16, 16, 16), (17, 33, 9), (4, 0, 3), (1, 20, 18), (18, 20, 1)]
LAYOUTS = ["contiguous", "transposed", "sliced", "broadcast", "strided out"]
# The simulator runs every CUDA thread as a Python thread (0.2-1 s a case), so the layouts are
# spread thin: all of them on 5x7x3 in float32, three on the two-block 17x33x9, and the float64
# kernel (the same code) on contiguous operands and one transposed pair.
LAYOUTS_FOR = {("float32", (5, 7, 3)): LAYOUTS, ("float32", (17, 33, 9)): LAYOUTS[:3],
               ("float64", (5, 7, 3)): LAYOUTS[:2]}


def _cases():
    for dtype in ("float32", "float64"):
        for shape in SHAPES:
            for layout in LAYOUTS_FOR.get((dtype, shape), LAYOUTS[:1]):
                yield f"{dtype} {'x'.join(map(str, shape))} {layout}", dtype, shape, layout
    yield "float32 40x9x5 in row slices", "float32", (40, 9, 5), "row slices"
    yield "float64 7x10x6 numpy entry point, strided arrays", "float64", (7, 10, 6), "numpy entry"


# The entry points' own argument checks: each bad call must raise the named error, saying what was
# wrong, before anything is written.
REJECTIONS = ["a list for a", "mixed dtypes", "integer arrays", "1-D a", "inner dimensions differ", "out of the wrong shape",
              "read-only out", "CPU tensors"]

CASES = [name for name, *_ in _cases()] + [f"rejects {what}" for what in REJECTIONS]


def _operands(np, shape, dtype, layout, seed):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    def normal(*s):
        return rng.standard_normal(s).astype(dtype)
    if layout == "transposed":
        return normal(k, m).T, normal(n, k).T
    if layout == "sliced":
        return normal(2 * m + 1, 3 * k)[1::2, 2::3], normal(k + 2, 2 * n)[2:, ::2]
    if layout == "broadcast":
        return np.broadcast_to(normal(1, k), (m, k)), np.broadcast_to(normal(k, 1), (k, n))
    if layout == "numpy entry":
        return normal(m, 2 * k)[:, ::2], normal(n, k).T
    return normal(m, k), normal(k, n)


def _run_case(np, nc, device_array, dtype, shape, layout, seed):
    import torch

    from gemmlab.reference import error_ratio

    a, b = _operands(np, shape, dtype, layout, seed)
    m, n = shape[0], shape[2]
    buffer = outside = None
    if layout == "strided out":  # every other column of a NaN buffer with a margin
        buffer = np.full((m + 2, 2 * n + 3), np.nan, dtype=dtype)
        out = buffer[1:m + 1, 1:2 * n + 1:2]
        outside = np.ones(buffer.shape, bool)
        outside[1:m + 1, 1:2 * n + 1:2] = False
    else:
        out = np.full((m, n), np.nan, dtype=dtype)
    if layout == "row slices":
        nc._MAX_GRID_Y = 1  # force a launch per 16 rows
    if layout == "numpy entry":
        nc.matmul_2d_numpy(a, b, out)
    else:
        nc.launch(device_array(a), device_array(b), device_array(out))
    ratio = error_ratio(torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(np.ascontiguousarray(a)),
                        torch.from_numpy(np.ascontiguousarray(b)))
    if not ratio <= 1.0:
        return {"ok": False, "detail": f"error {ratio:.3g} times the bound (NaN: an element was not written)"}
    if buffer is not None and not np.isnan(buffer[outside]).all():
        return {"ok": False, "detail": "wrote outside the output view"}
    return {"ok": True, "detail": f"error {ratio:.3g} times the bound"}


def _run_rejection(np, nc, what):
    import torch

    a, b = np.ones((4, 3)), np.ones((3, 5))
    out = np.full((4, 5), np.nan)
    read_only = out.copy()
    read_only.flags.writeable = False
    cpu = torch.ones(4, 3, dtype=torch.float64), torch.ones(3, 5, dtype=torch.float64), torch.from_numpy(out)
    bad_calls = {
        "a list for a": (lambda: nc.matmul_2d_numpy(a.tolist(), b, out), TypeError, "a must be a numpy array"),
        "mixed dtypes": (lambda: nc.matmul_2d_numpy(a.astype(np.float32), b, out), TypeError, "float32 or float64 arrays of one dtype"),
        "integer arrays": (lambda: nc.matmul_2d_numpy(a.astype(np.int64), b.astype(np.int64), np.zeros((4, 5), np.int64)), TypeError,
                           "float32 or float64 arrays"),
        "1-D a": (lambda: nc.matmul_2d_numpy(a[0], b, out), ValueError, "needs 2-D a, b and out"),
        "inner dimensions differ": (lambda: nc.matmul_2d_numpy(a, np.ones((2, 5)), out), ValueError, "shapes do not fit"),
        "out of the wrong shape": (lambda: nc.matmul_2d_numpy(a, b, out[:, :4]), ValueError, "shapes do not fit"),
        "read-only out": (lambda: nc.matmul_2d_numpy(a, b, read_only), ValueError, "out is read-only"),
        "CPU tensors": (lambda: nc.matmul_2d(*cpu), ValueError, "runs on CUDA devices"),
    }
    call, error, fragment = bad_calls[what]
    try:
        call()
    except error as exc:
        if fragment not in str(exc):
            return {"ok": False, "detail": f"{type(exc).__name__} without {fragment!r}: {exc}"}
        if not np.isnan(out).all():
            return {"ok": False, "detail": "out was written before the call was refused"}
        return {"ok": True, "detail": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        return {"ok": False, "detail": f"expected {error.__name__}, got {type(exc).__name__}: {exc}"}
    return {"ok": False, "detail": f"expected {error.__name__}, nothing raised"}


def main() -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise SystemExit("run with NUMBA_ENABLE_CUDASIM=1 (the cases need Numba's CUDA simulator)")
    import numpy as np

    from gemmlab.backends import numba_cuda as nc

    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray  # the simulator's device array

    assert nc.SIMULATOR
    max_grid_y = nc._MAX_GRID_Y
    results = {}
    for seed, (name, dtype, shape, layout) in enumerate(_cases()):
        try:
            results[name] = _run_case(np, nc, FakeCUDAArray, dtype, shape, layout, seed)
        except Exception as exc:  # report, keep going
            results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
        finally:
            nc._MAX_GRID_Y = max_grid_y
    for what in REJECTIONS:
        results[f"rejects {what}"] = _run_rejection(np, nc, what)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
