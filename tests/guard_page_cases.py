"""The numba and Cython kernels on operands that end where an unreadable page begins.

Their small paths read a b narrower than a vector a whole vector per row, past its last column,
and shift the last window of columns of a wider one left so as not to read past its end; the rows
of a past the last are read as the last. Here every operand's last element is followed by a page
that cannot be read, and the elements between its rows are NaN: a read past an operand is a crash,
a stray value read into a stored result a NaN. Run as a script by test_jit_kernels (a crash fails
that test, not the suite); prints "ok" when every product is exact.
"""

import ctypes
import mmap
from functools import partial

import torch

from gemmlab.backends import cython_ext, numba_jit

PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_mappings = []  # kept for the life of the process: the tensors below point into them

# (m, k, n, elements between b's rows): narrow b (in place but for its last rows; one column; a
# column-major copy), a wide b's shifted last window, two- and four-row tiles, a layer's h @ W.T.
CASES = [(5, 784, 10, 6), (13, 17, 3, 1), (7, 40, 1, 0), (3, 50, 40, 0), (7, 30, 33, 2), (64, 50, 10, 0),
         (1, 64, 20, 0), (2, 9, 16, 0)]


def before_guard_page(count: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor of `count` NaNs whose last byte is followed by an unreadable page."""
    size = torch.empty((), dtype=dtype).element_size()
    data = -(-count * size // mmap.PAGESIZE) * mmap.PAGESIZE
    mapping = mmap.mmap(-1, data + mmap.PAGESIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    if _libc.mprotect(address + data, mmap.PAGESIZE, PROT_NONE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    _mappings.append(mapping)
    return torch.frombuffer(mapping, dtype=dtype, count=count, offset=data - count * size).fill_(float("nan"))


def at_the_end(values: torch.Tensor, gap: int = 0, column_major: bool = False) -> torch.Tensor:
    """values in a view whose last element is the last before an unreadable page, with `gap` NaNs
    between its rows (or between its columns, column-major)."""
    lines, length = values.shape[::-1] if column_major else values.shape
    flat = before_guard_page((lines - 1) * (length + gap) + length, values.dtype)
    view = flat.as_strided((lines, length), (length + gap, 1))
    view.copy_(values.T if column_major else values)
    return view.T if column_major else view


def integers(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    """Nonzero integers of magnitude <= 4: every partial sum below is exact in float32."""
    magnitude = torch.randint(1, 5, shape)
    return (magnitude * (torch.randint(0, 2, shape) * 2 - 1)).to(dtype)


def main() -> None:
    kernels = {"numba": numba_jit.matmul_2d}
    for name in cython_ext.supported_variants():
        kernels[f"cython-{name}"] = partial(cython_ext.run_2d, cython_ext.load_variant(name), num_threads=1)
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for m, k, n, gap in CASES:
            a, b = integers(m, k, dtype=dtype), integers(k, n, dtype=dtype)
            expected = a.double() @ b.double()
            layouts = {
                "b rows apart": (at_the_end(a), at_the_end(b, gap)),
                "b column-major": (at_the_end(a), at_the_end(b, gap, column_major=True)),
                "a column-major": (at_the_end(a, gap, column_major=True), at_the_end(b)),
            }
            for layout, (x, y) in layouts.items():
                for name, kernel in kernels.items():
                    out = at_the_end(torch.full((m, n), float("nan"), dtype=dtype))
                    kernel(x, y, out)
                    if not torch.equal(out.double(), expected):
                        raise AssertionError(f"{name} {layout} ({m}, {k}) @ ({k}, {n}) {dtype}: "
                                             f"{int((out.double() != expected).sum())} wrong elements")
    print("ok")


if __name__ == "__main__":
    main()
