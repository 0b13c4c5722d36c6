"""Shared set-up for gemmlab's asv suite: fixed threads, data, and skipping what cannot run here.

asv skips a benchmark whose setup raises NotImplementedError; that is how backends missing from
this build (or a GPU this machine lacks) show as skipped, not failed.
"""

import os

import torch

from gemmlab.registry import get_backend

# CI's smoke run (GEMMLAB_ASV_SMOKE=1 with `asv run --quick`) runs every benchmark once on data
# 50x smaller, to prove the suite works without spending minutes on the measurements themselves.
SMOKE = os.environ.get("GEMMLAB_ASV_SMOKE") == "1"


def scaled(n: int) -> int:
    return max(1, n // 50) if SMOKE and n >= 1000 else n


THREADS = 2
torch.set_num_threads(THREADS)  # with OMP/MKL/NUMBA_NUM_THREADS from asv.conf.json: comparable runs

PYTHON_LEVELS = ("loops", "elementwise", "broadcast")  # microseconds per element: only the tiny shape
CPU_BACKENDS = ("loops", "elementwise", "broadcast", "einsum", "numba", "cython", "cpp", "torch")
FAST_BACKENDS = ("einsum", "numba", "cython", "cpp", "torch")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

TINY = (5, 784, 10)  # the notes' (5, 784) @ (784, 10)
# MNIST-sized network products: forward x @ w1, backward grad @ w1.T and x.T @ grad.
MLP_SHAPES = [(scaled(50000), 784, 50), (scaled(50000), 50, 784), (784, scaled(50000), 50)]
CUBE = scaled(1024)
N_TRAIN, N_IN, N_HIDDEN, N_OUT = scaled(50000), 784, 50, 10  # MNIST's training set through the notes' MLP


def require(backend: str) -> None:
    """Skip (NotImplementedError) unless backend runs here. Loads only that backend: asv runs each
    benchmark in a fresh process, and loading all of them (numba.cuda among them) costs seconds."""
    info = get_backend(backend).info()
    if not info["available"]:
        raise NotImplementedError(f"backend {backend!r} is not available: {info['reason']}")


def operands(m: int, k: int, n: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=gen, dtype=dtype), torch.randn(k, n, generator=gen, dtype=dtype)


def mnist_shaped(dtype=torch.float32, seed: int = 0):
    """Random numbers shaped like MNIST's training set (no download): x (50000, 784), labels 0..9."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN, N_IN, generator=gen, dtype=dtype)
    y = torch.randint(0, N_OUT, (N_TRAIN,), generator=gen)
    return x, y
