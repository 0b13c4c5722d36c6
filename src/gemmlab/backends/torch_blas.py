"""Backend `torch`: torch.mm, i.e. BLAS (MKL on x86 CPUs, cuBLAS on NVIDIA GPUs; the notes' level 4)."""

import torch

try:  # gemmlab.matmul calls torch.matmul from its C++ dispatch core, after its own checks
    from gemmlab._cpp import kernel_id

    NATIVE_KERNEL = kernel_id("torch")
except ImportError:  # the extension is missing: the backend still works, through Python
    NATIVE_KERNEL = None


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    torch.mm(a, b, out=out)
