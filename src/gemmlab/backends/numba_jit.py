"""Backend `numba`: a row-parallel loop kernel compiled by Numba's @njit.

The kernel is compiled eagerly for float32 and float64 on any-stride ('A' layout) arrays, so a
transposed or broadcast view is read in place and no new specialisation is compiled per layout.
Compiled code is cached on disk (cache=True); where no cache folder is writable, Numba refuses to
cache, and the kernel is compiled without it instead of failing.
"""

import numba
import numpy as np
import torch
from numba import prange, types

# Inputs are read-only views; the output is written.
_SIGNATURES = [
    types.void(
        types.Array(dtype, 2, "A", readonly=True),
        types.Array(dtype, 2, "A", readonly=True),
        types.Array(dtype, 2, "A"),
    )
    for dtype in (types.float32, types.float64)
]


def _kernel(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("gemmlab numba kernel: shapes do not fit: need a (m, k), b (k, n), out (m, n)")
    for i in prange(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]


try:
    _compiled = numba.njit(_SIGNATURES, parallel=True, cache=True)(_kernel)
    CACHE_NOTE = None
except RuntimeError as exc:  # "cannot cache function ...: no locator available"
    _compiled = numba.njit(_SIGNATURES, parallel=True)(_kernel)
    CACHE_NOTE = f"compiled without an on-disk cache: {exc}"


def matmul_2d_numpy(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Validated entry point on NumPy arrays: write a @ b into out."""
    arrays = {"a": a, "b": b, "out": out}
    for name, x in arrays.items():
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise TypeError(f"gemmlab numba matmul_2d: {name} must be a 2-D numpy array, got {type(x).__name__} "
                            f"with shape {getattr(x, 'shape', None)}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemmlab numba matmul_2d: needs float32 or float64 arrays of one dtype; "
                        f"got a {a.dtype}, b {b.dtype}, out {out.dtype}")
    if a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"gemmlab numba matmul_2d: shapes do not fit: a {a.shape}, b {b.shape}, out {out.shape}")
    if not out.flags.writeable:
        raise ValueError("gemmlab numba matmul_2d: out is read-only")
    if any(stride == 0 and size > 1 for stride, size in zip(out.strides, out.shape)):
        raise ValueError(f"gemmlab numba matmul_2d: out has elements that share memory (strides {out.strides})")
    if out.size and (np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        raise ValueError("gemmlab numba matmul_2d: out shares memory with an input; pass a separate output array")
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _compiled(a, b, out)


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    matmul_2d_numpy(a.numpy(), b.numpy(), out.numpy())
