"""Backend `loops`: three nested Python loops over tensor elements (the notes' level 0)."""

import torch


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    m, k = a.shape
    n = b.shape[1]
    out.zero_()
    for i in range(m):
        for j in range(n):
            for p in range(k):
                out[i, j] += a[i, p] * b[p, j]
