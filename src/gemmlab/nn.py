"""PyTorch modules whose products run on a chosen gemmlab backend, forward and backward.

`Linear` is a drop-in for torch.nn.Linear (same parameters, same initialisation, interchangeable
state_dicts) that computes x @ weight.T + bias on a gemmlab backend, so its gradients also come
from that backend's kernel: on backends with a kernel in the C++ core as one op and one autograd
node (gemmlab::native_linear), on the others with gemmlab.matmul and a bias add. `mlp` builds an ordinary nn.Sequential of them, one backend per layer if wanted.

A layer given a backend name (or "auto") keeps it. A layer given none (backend=None, the default)
follows gemmlab's default backend at the time it runs, as gemmlab.matmul(backend=None) does: the
backend of the innermost `gemmlab.use_backend` block, else `gemmlab.set_backend`'s. Its backward
products run on the backend its forward pass ran on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gemmlab.dispatch import matmul
from gemmlab.registry import NATIVE_KERNELS, current_backend


class Linear(nn.Module):
    """y = x @ weight.T + bias, the product on `backend` (see gemmlab.available_backends()).

    backend: a backend name or "auto", kept for every call; None (the default) follows
    gemmlab.current_backend() each time the layer runs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend: str | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.backend = in_features, out_features, backend
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.Linear's initialisation, so swapping one for the other changes only the kernel.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = current_backend() if self.backend is None else self.backend
        if name in NATIVE_KERNELS:
            # One op and one autograd node (csrc/autograd_op.cpp): the product on the kernel, the bias
            # added into its output, its gradient from the same node.
            return torch.ops.gemmlab.native_linear(x, self.weight, self.bias, name)
        # Backends without a kernel in the C++ core (the Python rungs; any backend until it loads).
        y = matmul(x, self.weight.T, backend=name)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        backend = "None (gemmlab's default when it runs)" if self.backend is None else repr(self.backend)
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, backend={backend}"


def mlp(sizes: Sequence[int], backend: str | None | Sequence[str | None] = None, activation=nn.ReLU,
        **factory) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them, e.g. mlp([784, 50, 10], "cpp").

    backend: one name (or None: follow gemmlab's default when it runs, see Linear) for every
    layer, or one per layer (len(sizes) - 1 of them)."""
    n_layers = len(sizes) - 1
    if n_layers < 1:
        raise ValueError(f"mlp needs at least two sizes (inputs and outputs); got {list(sizes)}")
    backends = [backend] * n_layers if backend is None or isinstance(backend, str) else list(backend)
    if len(backends) != n_layers:
        raise ValueError(f"mlp with sizes {list(sizes)} has {n_layers} layers but got {len(backends)} backends: {backends}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, backend=backends[i], **factory))
        if i < n_layers - 1:
            layers.append(activation())
    return nn.Sequential(*layers)
