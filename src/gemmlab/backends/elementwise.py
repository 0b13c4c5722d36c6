"""Backend `elementwise`: two Python loops, each dot product one vector op (the notes' level 1)."""

import torch


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    m, n = out.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = (a[i, :] * b[:, j]).sum()
