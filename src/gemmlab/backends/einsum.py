"""Backend `einsum`: torch.einsum('ik,kj->ij') (the notes' level 3)."""

import torch


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(torch.einsum("ik,kj->ij", a, b))
