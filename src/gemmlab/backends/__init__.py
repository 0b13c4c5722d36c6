"""One module per backend, each exposing `matmul_2d(a, b, out)`: write the 2-D product a @ b into out.

The dispatch layer (gemmlab.dispatch, gemmlab.ops) hands every kernel 2-D torch tensors that it has
already checked: same dtype, a supported device, fitting shapes, no lazily negated views, out
contiguous and fresh. Inputs may have any strides (transposed, sliced, stride-0 broadcast views).
The registry of backends, with the devices and dtypes each supports, is gemmlab.registry.
"""

import torch


def by_address(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> tuple[int, ...] | None:
    """(address, rows, cols, row stride, col stride) of a, b and out, flattened, for kernels that take
    operands by address (numba, cython): far cheaper per call than NumPy views. None when the three
    cannot go that way (not 2-D, mixed dtypes, not on the CPU, a lazily negated view); the caller
    then raises operand_error(...), which says what is wrong."""
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


def operand_error(who: str, a, b, out) -> Exception:
    """The exception for operands a kernel's address path cannot take (see by_address): it names
    the shapes, dtypes and devices involved. Built only when a call fails."""
    for name, x in (("a", a), ("b", b), ("out", out)):
        if not isinstance(x, torch.Tensor):
            return TypeError(f"{who} takes torch tensors a, b and out; {name} is {type(x).__name__}")
    got = ", ".join(f"{name} {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')} on {x.device}"
                    for name, x in (("a", a), ("b", b), ("out", out)))
    if not (a.is_cpu and b.is_cpu and out.is_cpu):
        return ValueError(f"{who} runs on the CPU; got {got}")
    if a.layout != torch.strided or b.layout != torch.strided or out.layout != torch.strided:
        return TypeError(f"{who} needs dense (strided) tensors; got layouts {a.layout}, {b.layout}, {out.layout} ({got})")
    if a.dim() != 2 or b.dim() != 2 or out.dim() != 2:
        return ValueError(f"{who} needs 2-D tensors; got {got}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (torch.float32, torch.float64):
        return TypeError(f"{who} needs float32 or float64 tensors of one dtype; got {got}")
    if a.is_neg() or b.is_neg() or out.is_neg():
        return ValueError(f"{who} cannot read lazily negated tensors (call .resolve_neg() first); got {got}")
    return RuntimeError(f"{who} cannot take these operands: {got}")  # unreachable while by_address's tests stay in step
