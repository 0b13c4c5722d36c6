"""gemmlab's product as a Python custom operator, for the backends without a native kernel.

Backends with a kernel in the C++ dispatch core have the op `gemmlab::native_product`, defined and
differentiated in C++ (csrc/autograd_op.cpp). The Python-level rungs (loops ... einsum) keep this
one, `gemmlab::python_product(Tensor a, Tensor b, str backend) -> Tensor`, which computes
(m, k) @ (k, n), or (B, m, k) @ (B, k, n), with the named backend's kernel. Its fake (meta) implementation gives
torch.compile the output's shape without running a kernel, and its backward computes
grad @ b^H and a^H @ grad (conjugate transposes: the gradients of a complex product; plain
transposes for real dtypes) with the SAME backend, through the op itself (so higher-order
gradients work too), each in its operand's layout.
"""

from __future__ import annotations

import torch

from gemmlab.registry import NATIVE_KERNELS, Backend, get_backend


def run(backend: Backend, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The product into a fresh contiguous output: in one call to the C++ dispatch core for a
    backend that has a native kernel, else one 2-D kernel call per batch entry.

    a and b must not require grad: the NumPy-based kernels cannot take such tensors. The core
    handles lazily negated views itself; for the kernels reached from Python, lazy conjugate or
    negative views (x.conj(), x.conj().imag) are materialised first, as the dispatcher does for the
    custom op: kernels that read memory by address would ignore the bit."""
    native = NATIVE_KERNELS.get(backend.name)
    if native is not None:
        core, kernel = native
        out = core(a, b, kernel)
        if out is not None:
            return out
    if a.is_conj() or a.is_neg():
        a = a.resolve_conj().resolve_neg()
    if b.is_conj() or b.is_neg():
        b = b.resolve_conj().resolve_neg()
    kernel = backend.kernel
    if a.dim() == 2:  # kept short: tiny products spend as long here as in the kernel
        m, k = a.shape
        out = a.new_empty((m, b.shape[1]))
        if k == 0:
            out.zero_()
        elif out.numel():
            kernel(a, b, out)
        return out
    batch, m, k = a.shape
    out = a.new_empty((batch, m, b.shape[2]))
    if k == 0:
        out.zero_()
    elif out.numel():
        for i in range(batch):
            kernel(a[i], b[i], out[i])
    return out


@torch.library.custom_op("gemmlab::python_product", mutates_args=())
def python_product(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    """(m, k) @ (k, n) or (B, m, k) @ (B, k, n) on the named backend (shapes already checked)."""
    return run(get_backend(backend), a.detach(), b.detach())


@python_product.register_fake
def _product_fake(a, b, backend):
    return a.new_empty((*a.shape[:-1], b.shape[-1]))


def _transposed(t: torch.Tensor) -> bool:
    """Whether a matrix (or batch of them) is held column-major: the transpose of a row-major one."""
    return t.shape[-2] > 1 and t.shape[-1] > 1 and t.stride(-2) == 1 and t.stride(-1) != 1


def _setup_context(ctx, inputs, output):
    a, b, backend = inputs
    ctx.save_for_backward(a, b)
    ctx.backend = backend
    ctx.transposed = _transposed(a), _transposed(b)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    # .mH is .mT for real dtypes; for complex ones d(a @ b) needs the conjugates (PyTorch's convention).
    # As in native_product's backward, a gradient comes in its operand's layout: for one held
    # transposed (a layer's W.T), the transpose of a row-major product, so that autograd need not
    # copy it into the parameter's layout (nor DDP into its buckets').
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_a = (python_product(b.conj(), grad.mT, ctx.backend).mT if ctx.transposed[0]
                  else python_product(grad, b.mH, ctx.backend))
    if ctx.needs_input_grad[1]:
        grad_b = (python_product(grad.mT, a.conj(), ctx.backend).mT if ctx.transposed[1]
                  else python_product(a.mH, grad, ctx.backend))
    return grad_a, grad_b, None


python_product.register_autograd(_backward, setup_context=_setup_context)
