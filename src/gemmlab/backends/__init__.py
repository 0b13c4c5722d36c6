"""One module per backend, each exposing `matmul_2d(a, b, out)`: write the 2-D product a @ b into out.

The dispatch layer (gemmlab.dispatch) hands every kernel 2-D torch tensors that it has already
checked: same dtype, a supported device, fitting shapes, out contiguous and fresh. Inputs may have
any strides (transposed, sliced, stride-0 broadcast views). The registry of backends, with the
devices and dtypes each supports, is gemmlab.registry.
"""

import torch


def by_address(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> tuple[int, ...] | None:
    """(address, rows, cols, row stride, col stride) of a, b and out, flattened, for kernels that take
    operands by address (numba, cython): far cheaper per call than NumPy views. None when the three
    cannot go that way (not 2-D, mixed dtypes, not on the CPU, a lazily negated view); the caller
    then uses its NumPy entry point, which says what is wrong."""
    if (b.dtype is not a.dtype or out.dtype is not a.dtype or not (a.is_cpu and b.is_cpu and out.is_cpu)
            or a.is_neg() or b.is_neg() or out.is_neg()):
        return None
    try:
        sa0, sa1 = a.stride()  # not 2-D: ValueError (sparse and other strideless layouts: RuntimeError)
        sb0, sb1 = b.stride()
        so0, so1 = out.stride()
    except ValueError:
        return None
    return (a.data_ptr(), *a.shape, sa0, sa1, b.data_ptr(), *b.shape, sb0, sb1, out.data_ptr(), *out.shape, so0, so1)
