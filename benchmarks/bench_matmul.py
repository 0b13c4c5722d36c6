"""gemmlab.matmul per backend, dtype and shape; achieved GFLOP/s; the dispatch layer's overhead."""

import timeit

import torch

import gemmlab

from .common import CPU_BACKENDS, CUBE, DTYPES, MLP_SHAPES, PYTHON_LEVELS, SMOKE, TINY, operands, require

SHAPES = [TINY, (CUBE, CUBE, CUBE)] if SMOKE else [TINY, (256, 256, 256), (CUBE, CUBE, CUBE), *MLP_SHAPES]


class MatMul:
    params = (list(CPU_BACKENDS), list(DTYPES), [f"{m}x{k}x{n}" for m, k, n in SHAPES])
    param_names = ["backend", "dtype", "shape"]
    timeout = 120

    def setup(self, backend, dtype, shape):
        require(backend)
        m, k, n = map(int, shape.split("x"))
        if backend in PYTHON_LEVELS and (m, k, n) != TINY:
            raise NotImplementedError("the pure-Python levels run only on the notes' tiny shape")
        self.a, self.b = operands(m, k, n, DTYPES[dtype])

    def time_matmul(self, backend, dtype, shape):
        gemmlab.matmul(self.a, self.b, backend=backend)


class Gflops:
    """Achieved GFLOP/s on a 1024 cube (CUBE) in float32: median of a few calls after a warm-up."""

    params = [b for b in CPU_BACKENDS if b not in PYTHON_LEVELS]
    param_names = ["backend"]
    unit = "GFLOP/s"
    timeout = 300

    def setup(self, backend):
        require(backend)
        self.a, self.b = operands(CUBE, CUBE, CUBE)
        gemmlab.matmul(self.a, self.b, backend=backend)

    def track_gflops(self, backend):
        times = timeit.repeat(lambda: gemmlab.matmul(self.a, self.b, backend=backend), number=1, repeat=5)
        return 2 * CUBE**3 / sorted(times)[2] / 1e9


class DispatchOverhead:
    """What gemmlab.matmul(backend='torch') costs over bare @ on the notes' tiny product."""

    unit = "microseconds"

    def setup(self):
        self.a, self.b = operands(*TINY)

    def track_overhead_us(self):
        def best(fn):
            return min(timeit.repeat(fn, number=2000, repeat=7)) / 2000

        gemmlab_time = best(lambda: gemmlab.matmul(self.a, self.b, backend="torch"))
        bare_time = best(lambda: self.a @ self.b)
        return (gemmlab_time - bare_time) * 1e6

    def time_gemmlab_torch(self):
        gemmlab.matmul(self.a, self.b, backend="torch")

    def time_bare_matmul(self):
        torch.matmul(self.a, self.b)
