"""Backend `broadcast`: one Python loop, a whole row of out at a time (the notes' level 2).

a[i, :, None] has shape (k, 1); broadcasting it against b (k, n) and summing over k gives row i.
"""

import torch


def matmul_2d(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    for i in range(out.shape[0]):
        out[i] = (a[i, :, None] * b).sum(dim=0)
