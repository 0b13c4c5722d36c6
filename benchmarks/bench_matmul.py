"""gemmlab.matmul per backend and product, BLAS peers next to them; with GEMMLAB_ASV_EXTRA=1 also
achieved GFLOP/s and the dispatch layer's overhead (informational `track_` numbers)."""

import timeit

import torch

import gemmlab

from .common import CUBE, EXTRA, FAST_BACKENDS, PEERS, PRODUCT_CASES, PYTHON_LEVELS, TINY, Sampled, case_names, operands, prepared_product, require


class MatMul(Sampled):
    """gemmlab.matmul(a, b, backend=...) on random operands: one call per sample."""

    params = (list(FAST_BACKENDS), PRODUCT_CASES)
    param_names = ["backend", "product"]

    def setup(self, backend, product):
        require(backend)
        self.run = prepared_product(backend, product)

    def time_matmul(self, backend, product):
        self.run()


class PeerMatMul(Sampled):
    """The same products through BLAS directly: torch's @ (MKL) and NumPy's @ (its BLAS, limited to
    the same threads with threadpoolctl). Reference rows: when they move, the machine moved."""

    params = (list(PEERS), PRODUCT_CASES)
    param_names = ["peer", "product"]

    def setup(self, peer, product):
        self.run = prepared_product(peer, product)

    def time_matmul(self, peer, product):
        self.run()


class PythonLevels(Sampled):
    """The notes' pure-Python levels, on the notes' tiny product only (loops take about a second)."""

    params = (list(PYTHON_LEVELS), case_names([("float32", TINY)]))
    param_names = ["backend", "product"]
    timeout = 180

    def setup(self, backend, product):
        require(backend)
        self.run = prepared_product(backend, product)

    def time_matmul(self, backend, product):
        self.run()


class Gflops:
    """Achieved GFLOP/s on a 1024 cube in float32: median of five calls after a warm-up. Informational
    (higher is better, one number per run): not for `asv continuous`."""

    params = list(FAST_BACKENDS)
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
    """What gemmlab.matmul(backend='torch') costs over bare @ on the notes' tiny product, in
    microseconds: a difference of two timings, informational."""

    unit = "microseconds"

    def setup(self):
        self.a, self.b = operands(*TINY)

    def track_overhead_us(self):
        def best(fn):
            return min(timeit.repeat(fn, number=2000, repeat=7)) / 2000

        gemmlab_time = best(lambda: gemmlab.matmul(self.a, self.b, backend="torch"))
        bare_time = best(lambda: torch.matmul(self.a, self.b))
        return (gemmlab_time - bare_time) * 1e6


if not EXTRA:  # out of the default selection, which `asv continuous` judges (see common.py)
    del Gflops, DispatchOverhead
