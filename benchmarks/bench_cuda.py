"""GPU products, defined only where there is a CUDA device: on a machine without one they would only
start processes that skip."""

import functools

import torch

import gemmlab

from .common import CUBE, GPU_BACKENDS, LARGE_CUBE, Sampled, operands


@functools.cache  # asv re-runs setup before every sample: make the operands once per process
def gpu_operands(n: int):
    return tuple(t.cuda() for t in operands(n, n, n))


class CudaMatMul(Sampled):
    params = (list(GPU_BACKENDS), [CUBE, LARGE_CUBE])
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        if backend not in gemmlab.known_backends() or backend not in gemmlab.available_backends():
            raise NotImplementedError(f"backend {backend!r} is not available")
        self.a, self.b = gpu_operands(n)
        torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS in plain float32, like the kernels
        self.time_matmul(backend, n)  # warm-up: CUDA context, kernel loading, cuBLAS handles

    def time_matmul(self, backend, n):
        gemmlab.matmul(self.a, self.b, backend=backend)
        torch.cuda.synchronize()


if not torch.cuda.is_available():
    del CudaMatMul
