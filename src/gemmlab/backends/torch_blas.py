"""Backend `torch`: torch.mm, i.e. BLAS (MKL on x86 CPUs, cuBLAS on NVIDIA GPUs; the notes' level 4)."""

import torch


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    torch.mm(a, b, out=out)
