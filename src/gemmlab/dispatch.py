"""gemmlab.matmul: everything but the 2-D product, written once for every backend.

Here live the argument checks, torch.matmul's shape semantics (1-D operands, batched N-D operands
with broadcast batch dimensions), NumPy in and out, and autograd. A backend only ever sees 2-D
operands (any strides) and a fresh contiguous output to fill.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gemmlab import ops
from gemmlab.registry import AUTO, Backend, current_backend, get_backend, pick_auto

ArrayLike = torch.Tensor | np.ndarray


def _describe(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)}, {str(x.dtype).removeprefix('torch.')} on {x.device}"


def _to_tensors(a, b) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both operands as tensors, and whether they came as NumPy arrays (so the result goes back as one)."""
    kinds = {type(a).__name__, type(b).__name__}
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a, b, False
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return _from_numpy(a, "a"), _from_numpy(b, "b"), True
    raise TypeError(f"gemmlab.matmul takes two torch.Tensors or two numpy.ndarrays; got {' and '.join(sorted(kinds))}")


def _needs_copy(x: np.ndarray) -> bool:
    """Whether torch cannot take x as it is: negative strides or non-native byte order (torch cannot
    view them), or an element whose address is not a multiple of the itemsize (NumPy allows such
    views, e.g. a complex128 view of an int16 buffer at an odd offset; torch's kernels may crash
    on them). Only those arrays are copied."""
    size = x.itemsize or 1
    return (not x.dtype.isnative or not x.flags.aligned or any(s < 0 or s % size for s in x.strides)
            # flags.aligned is NumPy's test, to the alignment of a complex number's parts; torch's
            # complex types are aligned to the whole number (asked only then: .ctypes is slow).
            or (x.dtype.alignment < size and x.ctypes.data % size != 0))


def _from_numpy(x: np.ndarray, name: str) -> torch.Tensor:
    if _needs_copy(x):
        x = np.array(x, dtype=x.dtype.newbyteorder("="), order="C")  # a fresh, aligned, native copy
    try:
        with warnings.catch_warnings():  # read-only arrays are fine: gemmlab never writes its inputs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)
    except TypeError as exc:
        raise TypeError(f"gemmlab.matmul: operand {name} has numpy dtype {x.dtype}, which torch cannot take ({exc})") from None


def _check_operands(a: torch.Tensor, b: torch.Tensor, backend: Backend) -> None:
    def pair() -> str:  # built only when there is an error to report: matmul is on hot paths
        return f"a: {_describe(a)}; b: {_describe(b)}"

    if a.layout != torch.strided or b.layout != torch.strided:
        raise TypeError(f"gemmlab.matmul needs dense (strided) tensors; got layouts {a.layout} and {b.layout}")
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError(f"gemmlab.matmul needs operands with at least 1 dimension; got a 0-d operand ({pair()})")
    if a.dtype != b.dtype:
        raise TypeError(f"gemmlab.matmul: operands have different dtypes ({pair()}); cast one with .to(dtype)")
    if a.dtype not in backend.dtypes:
        supported = ", ".join(str(d).removeprefix("torch.") for d in backend.dtypes)
        raise TypeError(f"backend {backend.name!r} supports {supported}; got {pair()}")
    device = a.device
    if device != b.device:
        raise ValueError(f"gemmlab.matmul: operands are on different devices ({pair()}); move one with .to(device)")
    if device.type not in backend.devices:
        raise ValueError(
            f"backend {backend.name!r} runs on {', '.join(backend.devices)}; got {pair()}; "
            f"move the operands with .to(...) or pick another backend"
        )
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.dim() == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"gemmlab.matmul: inner dimensions differ ({k_a} vs {k_b}); {pair()}")
    if a.dim() > 2 and b.dim() > 2:
        try:
            torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except RuntimeError:
            raise ValueError(f"gemmlab.matmul: batch dimensions do not broadcast; {pair()}") from None


def _resolve(backend: str | None, device: torch.device) -> Backend:
    name = current_backend() if backend is None else backend
    return pick_auto(device.type) if name == AUTO else get_backend(name)


def _differentiable_product(backend: Backend, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The 2-D or equal-batch 3-D product; through the custom op only where autograd or
    torch.compile needs it, since the op's dispatch costs more than the tiny products it wraps."""
    needs_grad = a.requires_grad or b.requires_grad
    if torch.compiler.is_compiling() or (needs_grad and torch.is_grad_enabled()):
        return ops.product(a, b, backend.name)
    if needs_grad:
        a, b = a.detach(), b.detach()
    return ops.run(backend.kernel, a, b)


def _matmul_tensors(a: torch.Tensor, b: torch.Tensor, backend: Backend) -> torch.Tensor:
    """torch.matmul's shape semantics on top of the 2-D (or equal-batch 3-D) product."""
    if a.dim() == 2 and b.dim() == 2:  # the common case, kept short: it is on every layer's hot path
        return _differentiable_product(backend, a, b)
    a2 = a.unsqueeze(0) if a.dim() == 1 else a  # (k,) -> (1, k)
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b  # (k,) -> (k, 1)
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    if b2.dim() == 2:
        # Every batch entry of a meets the same b: fold a's batch into rows, one 2-D product.
        lead = a2.shape[:-2]
        x, y = a2.reshape(math.prod(lead) * m, k), b2
    else:
        lead = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        size = math.prod(lead)
        x = a2.expand(*lead, m, k).reshape(size, m, k)
        y = b2.expand(*lead, k, n).reshape(size, k, n)
    out = _differentiable_product(backend, x, y).reshape(*lead, m, n)
    if a.dim() == 1:
        out = out.squeeze(-2)
    if b.dim() == 1:
        out = out.squeeze(-1)
    return out


def matmul(a: ArrayLike, b: ArrayLike, backend: str | None = None) -> ArrayLike:
    """a @ b with torch.matmul's semantics, computed by the chosen backend's kernel.

    a, b: two torch tensors (the result is a tensor on their device) or two NumPy arrays (the
    result is a NumPy array). backend: a name from gemmlab.available_backends(), "auto", or None
    for the current default (see gemmlab.set_backend / gemmlab.use_backend).
    """
    a_t, b_t, from_numpy = _to_tensors(a, b)
    chosen = _resolve(backend, a_t.device)
    chosen.kernel  # raises now if the backend cannot run here
    _check_operands(a_t, b_t, chosen)
    out = _matmul_tensors(a_t, b_t, chosen)
    if from_numpy:
        result = out.numpy()
        return result[()] if result.ndim == 0 else result  # a NumPy scalar for 1-D @ 1-D, as np.matmul gives
    return out
