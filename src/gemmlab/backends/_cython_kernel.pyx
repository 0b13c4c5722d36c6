# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""gemmlab's Cython kernel: out = a @ b on 2-D arrays of any strides.

Typed memoryviews take any strides (transposed, sliced, stride-0 broadcast views), so nothing is
copied. Bounds checks are off, so every argument is checked here before the loops run.
"""

import numpy as np
from cython.parallel cimport parallel, prange

ctypedef fused real:
    float
    double


def matmul_2d(const real[:, :] a not None, const real[:, :] b not None, real[:, :] out not None, int num_threads=1):
    """Write a @ b into out, splitting rows of out over num_threads OpenMP threads."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef Py_ssize_t i, j, p
    cdef real aip
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError(
            f"gemmlab cython matmul_2d: shapes do not fit: a {(m, k)}, b {(b.shape[0], b.shape[1])}, "
            f"out {(out.shape[0], out.shape[1])}; need a (m, k), b (k, n), out (m, n)"
        )
    if num_threads < 1:
        raise ValueError(f"gemmlab cython matmul_2d: num_threads must be >= 1, got {num_threads}")
    if m * n == 0:
        return
    out_array = np.asarray(out)
    if (m > 1 and out.strides[0] == 0) or (n > 1 and out.strides[1] == 0):
        raise ValueError(f"gemmlab cython matmul_2d: out has elements that share memory (strides {out_array.strides})")
    if np.may_share_memory(out_array, np.asarray(a)) or np.may_share_memory(out_array, np.asarray(b)):
        raise ValueError("gemmlab cython matmul_2d: out shares memory with an input; pass a separate output array")

    with nogil, parallel(num_threads=num_threads):
        for i in prange(m, schedule="static"):
            for j in range(n):
                out[i, j] = 0
            for p in range(k):
                aip = a[i, p]
                for j in range(n):
                    out[i, j] += aip * b[p, j]
