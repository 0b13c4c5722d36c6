"""Odd NumPy operands for gemmlab.matmul, run by test_numpy_inputs.py in a subprocess.

NumPy allows views torch's kernels cannot take as they are: data at an address that is not a
multiple of the itemsize (a complex128 view of an int16 buffer at an odd offset), strides that are
not a multiple of it, non-native byte order, negative strides. Such operands once crashed the
process, so `python numpy_input_cases.py BACKEND...` runs every case in a child process and prints
one JSON line per case as it finishes, {"case": name, "ok": bool, "detail": str}: the parent sees
which case a crash interrupted.
"""

from __future__ import annotations

import json
import sys

import numpy as np

# Every NumPy dtype that torch takes and can be misaligned (an itemsize above 1): the float and
# complex ones are products on the backends that support them, the integer ones a TypeError.
DTYPES = ["float16", "float32", "float64", "complex64", "complex128", "int16", "int64"]
# (a shape, b shape): vector-vector, matrix-vector, vector-matrix, n = 1, 2-D, batched.
SHAPES = [((2,), (2,)), ((3, 2), (2,)), ((2,), (2, 3)), ((1, 2), (2, 1)), ((4, 5), (5, 3)), ((2, 3, 4), (2, 4, 2))]
# name: (address mod itemsize, extra bytes in the outermost stride, Fortran order, byte order, view)
LAYOUTS = {
    "aligned": (0, 0, False, "=", None),
    "odd address": (1, 0, False, "=", None),
    # For complex dtypes NumPy calls this aligned (to the parts), torch does not (to the whole).
    "half-itemsize address": ("half", 0, False, "=", None),
    "odd address, Fortran order": (1, 0, True, "=", None),
    "odd strides": (0, 1, False, "=", None),
    "odd address, big-endian": (1, 0, False, ">", None),
    "odd address, reversed": (1, 0, False, "=", "reversed"),
    "odd address, read-only": (1, 0, False, "=", "read-only"),
}


def cases(backends):
    """(name, backend, dtype, layout, shapes) for every combination, in the order they run."""
    for backend in backends:
        for dtype in DTYPES:
            for layout in LAYOUTS:
                for shapes in SHAPES:
                    yield f"{backend} {dtype} {layout} {shapes[0]}@{shapes[1]}", backend, dtype, layout, shapes


def odd_array(values: np.ndarray, dtype: str, layout: str) -> np.ndarray:
    """values (float64 or complex128) as dtype, laid out in memory as the layout says."""
    residue, pad, fortran, order, view = LAYOUTS[layout]
    dt = np.dtype(dtype).newbyteorder(order)
    size = dt.itemsize
    residue = size // 2 if residue == "half" else residue
    shape = values.shape
    strides, step = [0] * len(shape), size
    for axis in (range(len(shape)) if fortran else reversed(range(len(shape)))):
        strides[axis], step = step, step * shape[axis]
    outer = -1 if fortran else 0
    strides[outer] += pad
    nbytes = sum(s * (d - 1) for s, d in zip(strides, shape)) + size
    buffer = np.zeros(nbytes + 2 * size, dtype=np.uint8)
    start = (residue - buffer.ctypes.data) % size
    x = np.ndarray(shape, dtype=dt, buffer=buffer, offset=start, strides=strides)
    x[...] = values if dt.kind == "c" else values.real
    assert (x.ctypes.data % size == residue) and (x.strides[outer] % size == pad % size), layout
    if view == "reversed":
        x = x[::-1]
    elif view == "read-only":
        x.flags.writeable = False
    return x


def run_case(backend: str, dtype: str, layout: str, shapes) -> str:
    """'' if gemmlab.matmul gives the right answer (or, for a dtype the backend lacks, a TypeError)."""
    import torch

    import gemmlab
    from gemmlab.reference import error_ratio
    from gemmlab.registry import BACKENDS

    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in shapes]
    a, b = (odd_array(v, dtype, layout) for v in values)
    if torch.from_numpy(np.zeros(1, dtype)).dtype not in BACKENDS[backend].dtypes:
        try:
            gemmlab.matmul(a, b, backend=backend)
        except TypeError as exc:
            return "" if "supports" in str(exc) else f"unexpected message: {exc}"
        return "no TypeError for an unsupported dtype"
    out = gemmlab.matmul(a, b, backend=backend)
    if np.shape(out) != np.matmul(a, b).shape or np.asarray(out).dtype != np.dtype(dtype):
        return f"got {type(out).__name__} {np.asarray(out).dtype} {np.shape(out)}"
    def tensor(x):
        return torch.from_numpy(np.array(x, dtype=dtype))  # an aligned, native copy
    ratio = error_ratio(tensor(out), tensor(a), tensor(b))
    return "" if ratio <= 1 else f"off by {ratio:.3g} times the allowed error"


def main(backends) -> None:
    for name, backend, dtype, layout, shapes in cases(backends):
        try:
            detail = run_case(backend, dtype, layout, shapes)
        except Exception as exc:  # reported as a failing case; only a crash ends the run
            detail = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"case": name, "ok": not detail, "detail": detail}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
