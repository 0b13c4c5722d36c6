"""gemmlab.matmul: everything but the 2-D product, written once for every backend.

Two roads lead to the kernels. The compiled backends (and `torch`) have a native one: one call into
gemmlab's C++ dispatch core (csrc/dispatch.cpp), which checks the operands, applies torch.matmul's
shape semantics (batched products included, broadcast batch dimensions as stride-0 views), allocates
the output and runs the kernel. Whatever the core does not take (it returns None) comes here, to the
Python road, which is the reference: the argument checks with their messages, the same shape
semantics on top of a backend's 2-D kernel, NumPy in and out, `out=`, and autograd through an
operator: the core's own `gemmlab::native_product` (registered in C++, csrc/autograd_op.cpp; the core
itself calls it for inputs that need grad) or, for the Python-level rungs (loops ... einsum), which
always take this road, the Python custom op in gemmlab.ops.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gemmlab import ops
from gemmlab.registry import AUTO, NATIVE_KERNELS, Backend, current_backend, get_backend, pick_auto

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


def _resolve(backend: str | None) -> Backend:
    name = current_backend() if backend is None else backend
    return pick_auto() if name == AUTO else get_backend(name)


def _differentiable_product(backend: Backend, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The 2-D or equal-batch 3-D product; through an op only where autograd or torch.compile needs
    it, since the op's dispatch costs more than the tiny products it wraps."""
    needs_grad = a.requires_grad or b.requires_grad
    if torch.compiler.is_compiling() or (needs_grad and torch.is_grad_enabled()):
        if backend.name in NATIVE_KERNELS:  # the same test as every native route (kernels carry their backend's name)
            return torch.ops.gemmlab.native_product(a, b, backend.name)
        return ops.python_product(a, b, backend.name)
    if needs_grad:
        a, b = a.detach(), b.detach()
    return ops.run(backend, a, b)


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


def _result_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rows = a.shape[-2:-1]  # none for a 1-D a
    columns = b.shape[-1:] if b.dim() > 1 else ()  # none for a 1-D b (its only dimension is k)
    return (*lead, *rows, *columns)


def _distinct_elements(t: torch.Tensor) -> bool:
    """No two elements share memory (a sufficient test: by stride, each dimension steps past the rest)."""
    reach = 0
    for stride, size in sorted((abs(st), sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
        if stride <= reach:
            return False
        reach += (size - 1) * stride
    return True


def _may_share_memory(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the bytes x and y span meet; by address, not storage: tensors from two views of one
    NumPy array (or through DLPack) have separate storages over the same memory."""
    if x.numel() == 0 or y.numel() == 0:
        return False

    def span(t):  # [first, last] byte a tensor's elements occupy
        lo = hi = t.data_ptr()
        for stride, size in zip(t.stride(), t.shape):
            step = (size - 1) * stride * t.element_size()
            lo, hi = (lo + step, hi) if step < 0 else (lo, hi + step)
        return lo, hi + t.element_size() - 1

    (x_lo, x_hi), (y_lo, y_hi) = span(x), span(y)
    return not (x_hi < y_lo or y_hi < x_lo)


def _checked_out(out, a: torch.Tensor, b: torch.Tensor, from_numpy: bool) -> torch.Tensor:
    """`out` as a tensor to write into, after torch.matmul's and NumPy's rules for it."""
    if from_numpy:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"gemmlab.matmul: out must be a numpy.ndarray for NumPy operands; got {type(out).__name__}")
        if not out.flags.writeable:
            raise ValueError("gemmlab.matmul: out is a read-only array")
        if not out.dtype.isnative or out.ctypes.data % out.dtype.itemsize or any(s < 0 for s in out.strides):
            raise ValueError(f"gemmlab.matmul: out must be aligned, in native byte order, with non-negative strides; "
                             f"got dtype {out.dtype}, strides {out.strides}")
        out_t = torch.from_numpy(out)
    elif isinstance(out, torch.Tensor):
        out_t = out
    else:
        raise TypeError(f"gemmlab.matmul: out must be a torch.Tensor for tensor operands; got {type(out).__name__}")
    shape = _result_shape(a, b)
    if out_t.dtype != a.dtype or out_t.device != a.device or tuple(out_t.shape) != shape:
        raise ValueError(f"gemmlab.matmul: out must have the product's shape {shape}, dtype "
                         f"{str(a.dtype).removeprefix('torch.')} and device {a.device}; got out: {_describe(out_t)}")
    if out_t.layout != torch.strided or not _distinct_elements(out_t):
        raise ValueError(f"gemmlab.matmul: out has elements that share memory (strides {out_t.stride()}); "
                         f"pass an output whose every element is its own")
    if _may_share_memory(out_t, a) or _may_share_memory(out_t, b):
        raise ValueError("gemmlab.matmul: out shares memory with an operand; pass a separate output")
    if out_t.is_inference() and not torch.is_inference_mode_enabled():  # checked before any write, unlike torch
        raise RuntimeError("gemmlab.matmul: out is an inference tensor, which cannot be written outside "
                           "torch.inference_mode(); pass a normal tensor (e.g. out.clone())")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or out_t.requires_grad):
        raise RuntimeError("gemmlab.matmul: out= does not support automatic differentiation, but "
                           f"{'out' if out_t.requires_grad else 'an operand'} requires grad; call it without out= "
                           "(or under torch.no_grad())")
    return out_t


def _matmul_python(a, b, name: str, out):
    """The reference road: every check with its message, then the product (see the module docstring)."""
    a_t, b_t, from_numpy = _to_tensors(a, b)
    chosen = _resolve(name)
    chosen.kernel  # raises now if the backend cannot run here
    _check_operands(a_t, b_t, chosen)
    out_t = None if out is None else _checked_out(out, a_t, b_t, from_numpy)
    native = NATIVE_KERNELS.get(chosen.name)
    result = None
    if native is not None and not torch.compiler.is_dynamo_compiling():
        core, kernel = native
        result = core(a_t, b_t, kernel, out_t)  # e.g. NumPy operands, now tensors
    if result is None:
        result = _matmul_tensors(a_t, b_t, chosen)
        if out_t is not None:
            result = out_t.copy_(result)
    if from_numpy:
        if out is not None:
            return out
        result = result.numpy()
        return result[()] if result.ndim == 0 else result  # a NumPy scalar for 1-D @ 1-D, as np.matmul gives
    return result


def matmul(a: ArrayLike, b: ArrayLike, backend: str | None = None, *, out: ArrayLike | None = None) -> ArrayLike:
    """a @ b with torch.matmul's semantics, computed by the chosen backend's kernel.

    a, b: two torch tensors (the result is a tensor on their device) or two NumPy arrays (the
    result is a NumPy array). backend: a name from gemmlab.available_backends(), "auto", or None
    for the current default (see gemmlab.set_backend / gemmlab.use_backend). out: where to write
    the result (a tensor, or an array for NumPy operands) of exactly the result's shape and dtype,
    sharing no memory with a or b; it is returned.
    """
    name = current_backend() if backend is None else backend
    native = NATIVE_KERNELS.get(name)
    # Dynamo cannot trace into the core: under torch.compile the Python road's custom op is what it
    # sees. (Other tracers work through dispatch modes, which make the core decline the call.)
    if native is not None and not torch.compiler.is_dynamo_compiling():
        core, kernel = native
        result = core(a, b, kernel, out)  # None: not the core's to take (see the module docstring)
        if result is not None:
            return result
    return _matmul_python(a, b, name, out)
